"""The identity store: people, images, faces, embeddings (``Store``, in ``store.database``) and
its exports (``store.export``)."""

from facefleet.clock import now_iso
from facefleet.store.database import (
    NAME_RULE,
    STATUSES,
    STRANGER_STATUSES,
    FaceRow,
    Person,
    Store,
    TrainingSet,
    check_person_name,
)

__all__ = [
    "NAME_RULE",
    "STATUSES",
    "STRANGER_STATUSES",
    "FaceRow",
    "Person",
    "Store",
    "TrainingSet",
    "check_person_name",
    "now_iso",
]

"""The identity store: people, images, faces, embeddings (``Store``, in ``store.database``) and
its exports (``store.export``)."""

from facefleet.clock import now_iso
from facefleet.store.database import STATUSES, FaceRow, Person, Store, TrainingSet

__all__ = ["STATUSES", "FaceRow", "Person", "Store", "TrainingSet", "now_iso"]

"""Labels: a reviewer's verdicts on faces, following SentinelCam's statuses.

``candidate`` (collected) -> ``selected`` (labelled with a person, or reviewed as a stranger)
-> ``in_use`` (part of a training run: ``autotrain`` moves every selected face to in_use
when it trains). ``revoked`` faces are kept but never trained on; ``remove`` deletes the face.
"This is not NAME" is a negative (``store.add_negative``): the face keeps its status and
counts as impostor evidence for NAME when thresholds are fitted.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.util import find_spec

from facefleet.errors import StoreError
from facefleet.store import Store
from facefleet.train.config import load_config
from facefleet.train.grouping import agglomerate
from facefleet.train.thresholds import strangers_needed

# Above this many reviewed strangers the note leaves out how many people they are: grouping
# them is quadratic (0.2 s for 2,000 faces, 4 s for 5,000), too slow for every page view.
GROUPED_NOTE_LIMIT = 2000


def _check(store: Store, face_ids: Iterable[int]) -> list[int]:
    ids = sorted({int(i) for i in face_ids})
    if not ids:
        raise StoreError("no faces given")
    marks = ",".join("?" * len(ids))
    have = {int(r["id"]) for r in store.conn.execute(f"SELECT id FROM faces WHERE id IN ({marks})", ids)}
    missing = [i for i in ids if i not in have]
    if missing:
        raise StoreError(f"no face(s) {', '.join(map(str, missing))} in the store (see 'facefleet curate')")
    return ids


def label(store: Store, face_ids: Iterable[int], name: str) -> list[int]:
    """These faces are ``name`` (a new person is created): status ``selected``."""
    with store.transaction():
        ids = _check(store, face_ids)
        person_id = store.add_person(name)
        store.set_person(ids, person_id)
        store.set_status(ids, "selected")
    return ids


def stranger(store: Store, face_ids: Iterable[int]) -> list[int]:
    """These faces are nobody enrolled: no person, status ``selected`` (impostor evidence
    for everyone)."""
    with store.transaction():
        ids = _check(store, face_ids)
        store.set_person(ids, None)
        store.set_status(ids, "selected")
    return ids


def label_not(store: Store, face_ids: Iterable[int], name: str) -> list[int]:
    """These faces are not ``name`` (an existing person); their status is unchanged."""
    with store.transaction():
        ids = _check(store, face_ids)
        person = store.person(name)
        for i in ids:
            if store.face(i).person_id == person.id:
                raise StoreError(
                    f"face {i} is labelled {name!r}: relabel it before saying it is not {name!r}"
                )
            store.add_negative(i, person.id)
    return ids


def discard(store: Store, face_ids: Iterable[int]) -> list[int]:
    """Revoke faces: kept for the record, never trained on."""
    with store.transaction():
        ids = _check(store, face_ids)
        store.set_status(ids, "revoked")
    return ids


def remove(store: Store, face_ids: Iterable[int]) -> list[int]:
    """SentinelCam's "remove": delete the faces (and images no face uses any more)."""
    with store.transaction() as conn:
        ids = _check(store, face_ids)
        conn.executemany("DELETE FROM faces WHERE id = ?", [(i,) for i in ids])
        conn.execute("DELETE FROM images WHERE id NOT IN (SELECT image_id FROM faces)")
    return ids


def selected_ids(store: Store) -> list[int]:
    return [f.id for f in store.faces(status="selected")]


def promote_selected(store: Store) -> list[int]:
    """Every selected face becomes ``in_use`` (done by autotrain when it trains)."""
    with store.transaction():
        ids = selected_ids(store)
        store.set_status(ids, "in_use")
    return ids


def strangers_note(reviewed: int, target: float, people: int | None = None) -> str:
    """What ``reviewed`` faces reviewed as strangers (``people`` different people, when known)
    do to the next training at ``target`` (pure)."""
    need = strangers_needed(target)
    head = f"{reviewed} face(s) reviewed as strangers"
    if people is not None and people < reviewed:
        head += f", about {people} {'person' if people == 1 else 'people'} (the estimate counts each once)"
    if reviewed >= need:
        return f"{head}: they set the next model's operating point (target {100 * target:.2f} %)."
    return (
        f"{head}; from {need} they set the next model's operating point alone (target "
        f"{100 * target:.2f} %), until then they join the enrolled people's own trials."
    )


def training_target(ws) -> float:
    """The strangers-named target the workspace's next training aims at."""
    return load_config(workspace_train=ws.settings.train or None).open_set.target_far


def stranger_people(store: Store, embedder_id: str, reviewed: int) -> int | None:
    """About how many people the ``reviewed`` strangers are, grouped as training groups them;
    None above :data:`GROUPED_NOTE_LIMIT` faces or where scikit-learn is not installed (a
    device-only install)."""
    if reviewed < 2:
        return reviewed
    if reviewed > GROUPED_NOTE_LIMIT or not find_spec("sklearn"):
        return None
    return int(agglomerate(store.stranger_set(embedder_id)).max()) + 1


def reviewed_strangers_note(ws, store: Store, embedder_id: str) -> str:
    """:func:`strangers_note` for the workspace: its reviewed strangers and its training target."""
    reviewed = store.stranger_count(embedder_id)
    return strangers_note(reviewed, training_target(ws), stranger_people(store, embedder_id, reviewed))

"""Legacy formats for people moving from SentinelCam and the old edge scripts.

Exports (written atomically): SentinelCam's ``facedata.hdf5`` (a group per person, a dataset
per face keyed ``date|event|timestamp|(x1,y1,x2,y2)|sink``), ``baselines.hdf5`` (one vector
per person with a ``threshold`` attribute), ``facemodel.pickle`` (``{'svm', 'labels'}`` built
here from the store; we write this pickle for the old tools, we never load one that came over
the network) and the edge scripts' ``face_database.json``.
Imports: SentinelCam's ``facelist.csv`` (faces with their review status, embedded from the
event frames) and ``facedata.hdf5`` (people, faces, embeddings) into the store.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import pickle
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facefleet.errors import FacefleetError, StoreError
from facefleet.fileio import atomic_write_bytes
from facefleet.formats import (  # noqa: F401 - SentinelCam's formats, re-exported for callers
    DEVICE_STATUSES,
    FACELIST_COLUMNS,
    REFKEY,
    STATUS_CODES,
    UNKNOWN_NAMES,
    format_refkey,
    normalise_timestamp,
    parse_refkey,
    parse_status,
)
from facefleet.store.ingest import ingest_face
from facefleet.texttable import skipped_lines

if TYPE_CHECKING:  # pragma: no cover
    from facefleet.store import Store
    from facefleet.workspace import Workspace

DEVICE_EVENTS = "events.jsonl"  # beside a device's facelist.csv: the decisions with their crops
SINK = "facefleet"
DIM = 128


class LegacyError(FacefleetError):
    """A legacy file could not be read or written."""


@dataclass
class ImportReport:
    """What an import did: faces added, people created, rows skipped with the reason."""

    source: Path
    faces_added: int = 0
    people_added: list[str] = field(default_factory=list)
    already_present: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (row or key, reason)

    def summary(self) -> str:
        lines = [
            f"{self.source}: {self.faces_added} faces added, {len(self.people_added)} new people, "
            f"{self.already_present} already in the store, {len(self.skipped)} skipped"
        ]
        return "\n".join(lines + skipped_lines(self.skipped))


# -- pure helpers ---------------------------------------------------------------------------


def person_name(value: str) -> str | None:
    value = value.strip()
    return None if value.lower() in UNKNOWN_NAMES else value


def check_vector(vec: Any) -> np.ndarray:
    arr = np.asarray(vec, dtype=np.float32).reshape(-1)
    if arr.shape != (DIM,):
        raise ValueError(f"expected a {DIM}-vector, got shape {np.shape(vec)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("vector holds NaN or infinity")
    return arr


def centroids(X: np.ndarray, names: list[str]) -> tuple[list[str], np.ndarray]:
    """Per-name mean vectors, names sorted."""
    labels = sorted(set(names))
    arr = np.asarray(names)
    return labels, np.stack([X[arr == n].mean(axis=0) for n in labels]).astype(np.float32)


def frame_key(text: str) -> str:
    """Digits of a timestamp or file name: ``2024-01-02 03:04:05.6`` -> ``2024010203040506``."""
    return re.sub(r"\D", "", text)


def find_frame(images_dir: Path, date: str, event: str, timestamp: str) -> Path | None:
    """The event frame SentinelCam saved for a face row, or None.

    camwatcher keeps frames as ``<images>/<date>/<event>_<timestamp>.jpg``; the timestamp's
    punctuation varies between versions, so names are compared by their digits.
    """
    folder = images_dir / date
    if not folder.is_dir():
        folder = images_dir
    if not folder.is_dir():
        return None
    want = frame_key(timestamp)
    near = []
    for path in folder.glob(f"{glob_escape(event)}*"):
        if not path.is_file():
            continue
        have = frame_key(path.stem[len(event) :])
        if have == want:
            return path
        # fractional seconds trimmed or padded differently
        if len(have) >= 14 and len(want) >= 14 and (have.startswith(want) or want.startswith(have)):
            near.append(path)
    return near[0] if len(near) == 1 else None


def device_crops(csv_path: Path) -> dict[tuple[str, str], Path]:
    """(run, track id) -> the face crop a facefleet device kept for that decision, from the
    ``events.jsonl`` beside its ``facelist.csv`` (the CSV's ``event`` and ``objid``)."""
    import json

    events = Path(csv_path).parent / DEVICE_EVENTS
    out: dict[tuple[str, str], Path] = {}
    if not events.is_file():
        return out
    with open(events, encoding="utf-8") as fh:
        for line in fh:
            try:
                ev = json.loads(line)
            except ValueError:
                continue  # a torn last line
            if not isinstance(ev, dict) or not ev.get("crop"):
                continue
            crop = Path(ev["crop"])
            if not crop.is_file():  # the device folder was copied: look beside it
                for near in (
                    events.parent / crop.name,
                    events.parent.parent / "few_shot_examples" / "unknown" / crop.name,
                ):
                    if near.is_file():
                        crop = near
                        break
            if crop.is_file():
                out[(str(ev.get("run")), str(ev.get("track_id")))] = crop
    return out


def row_image(rec: dict[str, Any], images_dir: Path, csv_dir: Path, crops: dict[tuple[str, str], Path]):
    """Where the face of a facelist row can be seen: ``(path, is_crop)`` or None.

    A SentinelCam event frame (camwatcher layout), else the image file named in ``source``
    (what ``curate --facelist`` writes), else the crop a facefleet device kept for it."""
    from facefleet.vision.image import is_image_name

    frame = find_frame(images_dir, rec["date"], rec["event"], rec["timestamp"])
    if frame is not None:
        return frame, False
    source = Path(str(rec.get("source") or "")).expanduser()
    if str(source) and is_image_name(source):
        for path in (source, csv_dir / source):
            if path.is_file():
                return path, False
    crop = crops.get((str(rec["event"]), str(rec["objid"])))
    return (crop, True) if crop is not None else None


def missing_image_reason(rec: dict[str, Any], images_dir: Path) -> str:
    if rec.get("device_row"):
        return (
            "no image of this face was kept on the device (no crop for this decision in "
            f"{DEVICE_EVENTS}; unknown crops are rate-limited and de-duplicated)"
        )
    return f"frame not found under {images_dir} (nor an image file in the source column)"


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


# -- writing --------------------------------------------------------------------------------


@contextlib.contextmanager
def _atomic_h5(path: Path) -> Iterator[Any]:
    """An HDF5 file written beside ``path`` and renamed over it only when complete."""
    h5py = _h5py()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as fh:
            yield fh
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _h5py():
    try:
        import h5py
    except ImportError as exc:
        raise LegacyError(f"h5py is not installed (pip install 'facefleet[server]'): {exc}") from None
    return h5py


def current_embedder_id(ws: Workspace) -> str:
    """The id of the embedder this workspace embeds with."""
    from facefleet.vision.embed import make_embedder

    return make_embedder(ws.settings.vision.embedder, cache_dir=ws.cache_dir).id


def _face_refkey(face: Any) -> str:
    sc = (face.meta or {}).get("sentinelcam") or {}
    if sc.get("date") and sc.get("event") and sc.get("timestamp"):
        return format_refkey(sc["date"], sc["event"], sc["timestamp"], face.box, sc.get("sink", SINK))
    created = face.created or "1970-01-01T00:00:00"
    event = f"img{face.image_id}"
    return format_refkey(created[:10], event, created, face.box, SINK)


def export_facedata(
    ws: Workspace,
    path: Path | str,
    *,
    statuses: list[str] | tuple[str, ...] = ("in_use",),
    embedder_id: str | None = None,
) -> int:
    """Write SentinelCam's ``facedata.hdf5`` from the store's labelled faces; returns the count."""
    embedder_id = embedder_id or current_embedder_id(ws)
    store = ws.open_store()
    try:
        written = 0
        with _atomic_h5(Path(path)) as fh:
            fh.attrs["embedder_id"] = embedder_id
            for face in store.faces():
                if face.status not in statuses or not face.person_name:
                    continue
                vec = store.embedding(face.id, embedder_id)
                if vec is None:
                    continue
                group = fh.require_group(face.person_name)
                key = _face_refkey(face)
                if key in group:
                    continue
                group.create_dataset(key, data=np.asarray(vec, dtype=np.float32))
                written += 1
    finally:
        store.close()
    return written


def _bundle_baselines(ws: Workspace, bundle: Path) -> tuple[list[str], np.ndarray, list[float]]:
    from facefleet.registry.format import MODEL_FILE, unpack_bundle, verify_bundle
    from facefleet.registry.inference import MARGIN_RULE
    from facefleet.registry.keys import load_public_key, public_key_path

    key = load_public_key(public_key_path(ws.keys_dir))
    with tempfile.TemporaryDirectory(prefix="facefleet-bundle-") as tmp:
        folder = bundle if bundle.is_dir() else unpack_bundle(bundle, Path(tmp) / "bundle")
        manifest = verify_bundle(folder, key)
        with np.load(folder / MODEL_FILE, allow_pickle=False) as arrays:
            cents = np.asarray(arrays["centroids"], dtype=np.float32)
    labels = list(manifest["labels"])
    thresholds = [float(manifest["thresholds"][name]) for name in labels]
    rule = manifest.get("open_set") or {}
    if rule.get("rule") == MARGIN_RULE:
        # SentinelCam compares the centroid distance alone: the largest centroid distance the
        # margin rule can ever accept for that person
        slack = float(rule["margin"]) * float(rule["far_distance"])
        thresholds = [min(t + slack, float(rule["max_distance"])) for t in thresholds]
    return labels, cents, thresholds


def export_baselines(
    ws: Workspace,
    path: Path | str,
    *,
    bundle: Path | str | None = None,
    embedder_id: str | None = None,
) -> int:
    """Write SentinelCam's ``baselines.hdf5``: one vector per person, attribute ``threshold``.

    From a signed bundle (verified with the workspace key): its centroids and per-person
    thresholds. Without one: centroids of the store's in-use faces and the workspace's
    ``identify.distance_threshold`` for everyone.
    """
    if bundle:
        labels, cents, thresholds = _bundle_baselines(ws, Path(bundle))
    else:
        store = ws.open_store()
        try:
            ts = store.training_set(embedder_id or current_embedder_id(ws))
        finally:
            store.close()
        if len(ts.names) == 0:
            raise LegacyError("no labelled faces with embeddings in the store: enrol people first")
        labels, cents = centroids(ts.X, ts.names)
        default = ws.settings.identify.distance_threshold
        thresholds = [default] * len(labels)
    with _atomic_h5(Path(path)) as fh:
        for name, vec, thr in zip(labels, cents, thresholds):
            ds = fh.create_dataset(name, data=np.asarray(vec, dtype=np.float32))
            ds.attrs["threshold"] = float(thr)
    return len(labels)


def build_facemodel(X: np.ndarray, names: list[str]) -> dict[str, Any]:
    """``{'svm': classifier with predict_proba, 'labels': LabelEncoder}`` as SentinelCam reads.

    Logistic regression rather than ``SVC(probability=True)`` (deprecated in scikit-learn 1.9):
    same accuracy on face embeddings, same ``predict_proba`` interface for the old tools.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import LabelEncoder

    if len(set(names)) < 2:
        raise LegacyError("facemodel.pickle needs at least two people with embedded faces")
    labels = LabelEncoder().fit(names)
    clf = LogisticRegression(C=10.0, max_iter=2000).fit(X, labels.transform(names))
    return {"svm": clf, "labels": labels}


def export_facemodel(ws: Workspace, path: Path | str, *, embedder_id: str | None = None) -> int:
    """Write SentinelCam's ``facemodel.pickle`` trained on the store's in-use faces."""
    store = ws.open_store()
    try:
        ts = store.training_set(embedder_id or current_embedder_id(ws))
    finally:
        store.close()
    model = build_facemodel(ts.X, list(ts.names))
    atomic_write_bytes(Path(path), pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    return len(model["labels"].classes_)


def export_face_database(ws: Workspace, path: Path | str) -> int:
    """Write the edge scripts' ``face_database.json`` (the store's own export)."""
    from facefleet.store.export import face_database, write_face_database

    store = ws.open_store()
    try:
        write_face_database(store, Path(path))
        return int(face_database(store)["total_people"])
    finally:
        store.close()


# -- reading --------------------------------------------------------------------------------


def _existing_faces(store: Store) -> set[tuple[int, tuple[int, ...]]]:
    return {(f.image_id, tuple(f.box)) for f in store.faces()}


def _import_face(
    store: Store,
    report: ImportReport,
    existing: set[tuple[int, tuple[int, ...]]],
    image: Path | str,
    sha: str,
    name: str | None,
    **face: Any,
) -> None:
    """One SentinelCam face into the store, unless that box of that frame is already there;
    the person (when named) is created only for a face that is added."""
    got = ingest_face(
        store,
        image,
        sha256=sha,
        source="sentinelcam",
        detector="sentinelcam",
        person_id=(lambda: _person_id(store, name, report)) if name else None,
        known=existing,
        **face,
    )
    if got.face_id is None:
        report.already_present += 1
    else:
        report.faces_added += 1


def _person_id(store: Store, name: str, report: ImportReport) -> str:
    found = store.find_person(name)
    if found is not None:
        return found.id
    report.people_added.append(name)
    return store.add_person(name)


def import_facedata(ws: Workspace, path: Path | str, *, embedder_id: str | None = None) -> ImportReport:
    """Read SentinelCam's ``facedata.hdf5`` into the store as in-use faces with embeddings.

    The frames themselves are not in the file: each face hangs off a placeholder image
    (source ``sentinelcam``) identified by its event frame. One transaction: all or nothing;
    malformed keys or vectors are skipped and reported; faces already present are not doubled.
    """
    h5py = _h5py()
    path = Path(path)
    report = ImportReport(source=path)
    embedder_id = embedder_id or current_embedder_id(ws)
    try:
        fh = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise LegacyError(f"{path}: not a readable HDF5 file ({exc})") from None
    store = ws.open_store()
    try:
        existing = _existing_faces(store)
        with store.transaction():
            for name in sorted(fh.keys()):
                group = fh[name]
                if not isinstance(group, h5py.Group) or not person_name(name):
                    report.skipped.append((name, "not a person group"))
                    continue
                for key in sorted(group.keys()):
                    try:
                        ref = parse_refkey(key)
                        vec = check_vector(group[key][()])
                    except (ValueError, TypeError) as exc:
                        report.skipped.append((f"{name}/{key}", str(exc)))
                        continue
                    frame = f"{ref['date']}|{ref['event']}|{ref['timestamp']}|{ref['sink']}"
                    sha = hashlib.sha256(f"sentinelcam-frame:{frame}".encode()).hexdigest()
                    _import_face(
                        store,
                        report,
                        existing,
                        f"sentinelcam:{frame}",
                        sha,
                        name,
                        box=ref["box"],
                        status="in_use",
                        meta={"sentinelcam": {k: ref[k] for k in ("date", "event", "timestamp", "sink")}},
                        embedder_id=embedder_id,
                        embedding=vec,
                    )
    finally:
        fh.close()
        store.close()
    return report


def read_facelist(path: Path) -> list[dict[str, str]]:
    """The rows of a ``facelist.csv``; a clear error when it is not one."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in FACELIST_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise LegacyError(
                    f"{path}: not a SentinelCam facelist.csv (missing columns: {', '.join(missing)})"
                )
            return list(reader)
    except FileNotFoundError:
        raise LegacyError(f"{path}: no such file") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise LegacyError(f"{path}: not a readable CSV file ({exc})") from None


def _parse_row(row: dict[str, str]) -> dict[str, Any] | None:
    """One facelist row as typed fields; None for a "remove" row; ValueError when malformed."""
    status = parse_status(row["status"] or "")
    if status is None:
        return None
    box = tuple(int(float(row[k])) for k in ("x1", "y1", "x2", "y2"))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"empty face box {box}")
    extra = {}
    for key in ("proba", "dist", "margin", "angle", "focus"):
        with contextlib.suppress(ValueError, TypeError):
            extra[key] = float(row[key])
    stamp = row["timestamp"].strip()
    try:
        timestamp = normalise_timestamp(stamp)
    except ValueError:
        # a time of day with the date in its own column (older facefleet exports)
        if not row["date"].strip() or "-" in stamp:
            raise
        timestamp = normalise_timestamp(f"{row['date'].strip()}T{stamp}")
    return {
        "date": row["date"].strip(),
        "event": row["event"].strip(),
        "timestamp": timestamp,
        "device_row": row["status"].strip().lower() in DEVICE_STATUSES,
        "objid": row["objid"],
        "source": row["source"],
        "status": status,
        # a device's decision is a guess to review, not a label: kept as meta, not a person
        "name": None if row["status"].strip().lower() in DEVICE_STATUSES else person_name(row["name"] or ""),
        "device_name": person_name(row["name"] or ""),
        "box": box,
        "extra": extra,
    }


def import_facelist(
    ws: Workspace,
    path: Path | str,
    *,
    images_dir: Path | str | None = None,
    embed: bool = True,
    sink: str = "data1",
) -> ImportReport:
    """Read SentinelCam's ``facelist.csv``: each face with its review status and name.

    Frames are looked up under ``images_dir`` (default: ``images/`` beside the CSV) as
    camwatcher saved them; rows whose frame is missing are skipped and reported. With
    ``embed`` each face is embedded from its frame (landmarks inside the recorded box).
    All faces are written in one transaction, after every frame has been read. ``sink`` is
    the SentinelCam data sink the rows came from (it is part of their ``facedata`` keys).
    """
    from facefleet.fileio import sha256_file
    from facefleet.vision.image import load_image

    path = Path(path)
    rows = read_facelist(path)
    images_dir = Path(images_dir) if images_dir else path.parent / "images"
    report = ImportReport(source=path)
    crops = device_crops(path)
    pending: list[tuple[dict[str, Any], Path, str, np.ndarray | None]] = []
    engine = ws.engine() if embed else None
    from facefleet.progress import progress

    for n, row in enumerate(progress(rows, total=len(rows), desc="facelist"), start=2):
        where = f"line {n}"
        try:
            rec = _parse_row(row)
        except (ValueError, TypeError, KeyError) as exc:
            report.skipped.append((where, str(exc)))
            continue
        if rec is None:
            report.skipped.append((where, "marked for removal (status 4)"))
            continue
        found = row_image(rec, images_dir, path.parent, crops)
        if found is None:
            report.skipped.append((where, missing_image_reason(rec, images_dir)))
            continue
        frame, is_crop = found
        vec = None
        try:
            if is_crop:  # the row's box is in frame pixels: find the face in the crop instead
                rgb = load_image(frame)
                rec = {**rec, "box": (0, 0, rgb.shape[1], rgb.shape[0])}
                if engine is not None:
                    faces = engine.analyse(rgb)
                    if not faces:
                        report.skipped.append((where, f"{frame.name}: no face found in the kept crop"))
                        continue
                    face = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
                    rec["box"], vec = tuple(int(v) for v in face.box), face.embedding
            elif engine is not None:
                rgb = load_image(frame)
                points = engine.landmarks(rgb, rec["box"])
                vec = engine.embed_chips([engine.chip(rgb, points, rec["box"])])[0]
        except FacefleetError as exc:
            report.skipped.append((where, str(exc)))
            continue
        pending.append((rec, frame, sha256_file(frame), vec))

    embedder_id = engine.embedder.id if engine is not None else None
    store = ws.open_store()
    try:
        existing = _existing_faces(store)
        with store.transaction():
            for rec, frame, sha, vec in pending:
                keys = ("date", "event", "timestamp", "objid", "source")
                _import_face(
                    store,
                    report,
                    existing,
                    frame,
                    sha,
                    rec["name"],
                    box=rec["box"],
                    quality=rec["extra"],
                    status=rec["status"],
                    meta={"sentinelcam": {k: rec[k] for k in keys} | {"sink": sink}}
                    | ({"origin": "device", "name": rec["device_name"]} if rec["device_row"] else {}),
                    embedder_id=embedder_id,
                    embedding=vec,
                )
    except StoreError as exc:
        raise LegacyError(f"{path}: {exc}") from None
    finally:
        store.close()
    return report

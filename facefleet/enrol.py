"""Enrolment: a few photos per person in, accepted faces in the store (or a reason per photo).

Photos come as explicit lists, a folder per person, or flat ``name_1.jpg`` files. A photo
already in the store (same sha256) is never analysed or embedded again.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from facefleet import compute
from facefleet.errors import FacefleetError, StoreError
from facefleet.fileio import sha256_file
from facefleet.settings import QualitySettings, to_mapping
from facefleet.store import check_person_name
from facefleet.store.ingest import ingest_found_face, keep_copy
from facefleet.vision.batch import FoundFace, ImageAnalysis, analyse_files
from facefleet.vision.image import MAX_FILE_BYTES, is_image_name
from facefleet.vision.quality import Quality, unusable_reason
from facefleet.workspace import Workspace

WRITE_BATCH = 64  # photos written per store transaction, at most ...
WRITE_SECONDS = 2.0  # ... and at least this often while photos are being analysed

_FLAT_NAME = re.compile(r"^(?P<name>.+?)[_\- ]?(?P<index>\d+)$")


@dataclass
class PhotoOutcome:
    path: str
    person: str
    accepted: bool
    reason: str | None = None
    face_id: int | None = None
    person_id: str | None = None
    cached: bool = False
    quality: dict | None = None


@dataclass
class EnrolReport:
    outcomes: list[PhotoOutcome] = field(default_factory=list)

    @property
    def accepted(self) -> list[PhotoOutcome]:
        return [o for o in self.outcomes if o.accepted]

    @property
    def rejected(self) -> list[PhotoOutcome]:
        return [o for o in self.outcomes if not o.accepted]

    def person_ids(self) -> dict[str, str]:
        return {o.person: o.person_id for o in self.outcomes if o.person_id}

    def rejection_reasons(self) -> Counter:
        return Counter(_reason_kind(o.reason or "") for o in self.rejected)

    def as_dict(self) -> dict:
        return {
            "accepted": len(self.accepted),
            "rejected": len(self.rejected),
            "people": self.person_ids(),
            "photos": [asdict(o) for o in self.outcomes],
        }


def _reason_kind(reason: str) -> str:
    return reason.split(" (")[0].split(":")[0]


# -- planning: which photo belongs to whom -------------------------------------------------
def plan_folder(folder: Path | str) -> list[tuple[str, Path]]:
    """One sub-folder per person: ``folder/<name>/*.jpg``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FacefleetError(f"{folder}: not a folder")
    items = [
        (person.name, photo)
        for person in sorted(p for p in folder.iterdir() if p.is_dir())
        for photo in sorted(person.iterdir())
        if photo.is_file() and is_image_name(photo)
    ]
    if not items:
        raise FacefleetError(f"{folder}: no photos in sub-folders (expected {folder}/<name>/*.jpg)")
    return items


def name_from_flat_file(path: Path) -> str:
    """``john_doe_3.jpg`` -> ``john_doe``; ``madonna.jpg`` -> ``madonna``."""
    match = _FLAT_NAME.match(Path(path).stem)
    name = match.group("name") if match else Path(path).stem
    return name.rstrip("_- ") or Path(path).stem


def plan_flat(folder: Path | str) -> list[tuple[str, Path]]:
    """Files named ``<name>_<n>.jpg`` in one folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FacefleetError(f"{folder}: not a folder")
    items = [
        (name_from_flat_file(p), p) for p in sorted(folder.iterdir()) if p.is_file() and is_image_name(p)
    ]
    if not items:
        raise FacefleetError(f"{folder}: no photos named like <name>_1.jpg")
    return items


# -- choosing the face ------------------------------------------------------------------------
def choose_face(
    analysis: ImageAnalysis, quality_cfg: QualitySettings, *, largest: bool
) -> tuple[FoundFace | None, str | None]:
    """The one usable face of an enrolment photo, or why there is none."""
    if analysis.error:
        if "image too small" in analysis.error or "crashed the face engine" in analysis.error:
            return None, analysis.error.removeprefix(f"{analysis.path}: ")
        return None, f"unreadable: {analysis.error}"
    faces = analysis.faces
    if not faces:
        return None, "no face found"
    if len(faces) > 1:
        if not largest:
            return None, f"several faces ({len(faces)}): pass --largest to take the largest"
        faces = [max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))]
    face = faces[0]
    if face.embedding is None:
        return None, "no embedding"
    reason = unusable_reason(Quality.from_dict(face.quality), quality_cfg)
    return (None, reason) if reason else (face, None)


def _settings_key(ws: Workspace, embedder_id: str, largest: bool) -> str:
    """What a cached rejection depends on: detector, quality thresholds, embedder."""
    data = {
        "vision": to_mapping(ws.settings.vision),
        "quality": to_mapping(ws.settings.quality),
        "emb": embedder_id,
        "largest": largest,
    }
    data["vision"].pop("workers", None)
    return json.dumps(data, sort_keys=True)


# -- enrolment ------------------------------------------------------------------------------
def enroll(
    ws: Workspace,
    items: list[tuple[str, Path]],
    *,
    largest: bool = False,
    workers: int | None = None,
    source: str = "enrol",
    scheduler: str | None = None,
) -> EnrolReport:
    """Enrol ``(name, photo)`` pairs; returns an outcome per photo. Nothing already known is redone.

    The photos are analysed here, or on the Dask cluster of ``scheduler`` / ``compute.scheduler``;
    only this process writes the store, one transaction per batch of photos.
    """
    cluster = compute.for_workspace(ws, scheduler)
    store = ws.open_store()
    config = ws.vision_config()
    engine = ws.engine()
    embedder_id = engine.embedder.id  # converts/loads the embedder once, before any worker starts
    settings = _settings_key(ws, embedder_id, largest)
    report = EnrolReport()
    pending: list[tuple[str, Path, str]] = []
    try:
        for name, path in items:
            path = Path(path)
            try:
                name = check_person_name(name)
            except StoreError as exc:
                report.outcomes.append(PhotoOutcome(str(path), repr(name)[1:-1][:60], False, str(exc)))
                continue
            try:
                sha = sha256_file(path, max_bytes=MAX_FILE_BYTES)
            except OSError as exc:
                reason = f"unreadable: {_os_reason(path, exc)}"
                report.outcomes.append(PhotoOutcome(str(path), name, False, reason))
                continue
            cached = _cached_outcome(store, name, path, sha, embedder_id, settings)
            if cached is not None:
                report.outcomes.append(cached)
            else:
                pending.append((name, path, sha))
        # the same photo listed twice in one batch is analysed once
        unique = list(dict.fromkeys(p for _, p, _ in pending))
        analyses: dict[str, ImageAnalysis] = {}
        ready: list[tuple[str, Path, str]] = []
        written, last_write = 0, time.monotonic()

        def write() -> None:
            nonlocal last_write
            with store.transaction():
                for item in ready:
                    analysis = analyses[str(item[1])]
                    report.outcomes.append(
                        _record(ws, store, item, analysis, settings, embedder_id, source, largest)
                    )
            ready.clear()
            last_write = time.monotonic()

        # results are written as they arrive (in order, a transaction per WRITE_BATCH photos or
        # WRITE_SECONDS), so a run killed or crashed half way keeps what it had done
        with compute.using(cluster):
            for a in analyse_files(
                unique, config, workers=workers or ws.settings.vision.workers, engine=engine, desc="enrol"
            ):
                analyses[a.path] = a
                while written < len(pending) and str(pending[written][1]) in analyses:
                    ready.append(pending[written])
                    written += 1
                if len(ready) >= WRITE_BATCH or (ready and time.monotonic() - last_write >= WRITE_SECONDS):
                    write()
        ready.extend(pending[written:])
        if ready:
            write()
    finally:
        store.close()
    return report


def _record(ws, store, item, analysis, settings, embedder_id, source, largest) -> PhotoOutcome:
    """Write one analysed photo's outcome (accepted face or cached rejection) to the store.
    The sha256 is looked up again first: a photo listed twice is stored once."""
    name, path, sha = item
    cached = _cached_outcome(store, name, path, sha, embedder_id, settings)
    if cached is not None:
        return cached
    face, reason = choose_face(analysis, ws.settings.quality, largest=largest)
    if face is None:
        # a missing file or a crash may be gone next time: only cache real rejections
        if not (analysis.error and ("no such file" in analysis.error or "crashed" in analysis.error)):
            store.record_rejection(sha, settings, reason or "rejected")
        return PhotoOutcome(str(path), name, False, reason)
    return _accept(ws, store, name, path, sha, face, embedder_id, source, settings)


def _cached_outcome(store, name, path, sha, embedder_id, settings) -> PhotoOutcome | None:
    row = store.image_by_sha(sha)
    if row is not None:
        for face in store.faces(image_id=int(row["id"])):
            if face.person_id is None or store.embedding(face.id, embedder_id) is None:
                continue
            if face.person_name != name:
                return PhotoOutcome(
                    str(path),
                    name,
                    False,
                    f"already enrolled as {face.person_name!r}",
                    face_id=face.id,
                    cached=True,
                )
            return PhotoOutcome(
                str(path),
                name,
                True,
                None,
                face_id=face.id,
                person_id=face.person_id,
                cached=True,
                quality=face.quality,
            )
    reason = store.rejection(sha, settings)
    if reason is not None:
        return PhotoOutcome(str(path), name, False, reason, cached=True)
    return None


def _os_reason(path: Path, exc: OSError) -> str:
    if isinstance(exc, FacefleetError):  # NotARegularFileError: already says what and where
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"{path}: no such file"
    return f"{path}: {(exc.strerror or str(exc)).lower()}"


def _accept(ws, store, name, path: Path, sha, face: FoundFace, embedder_id, source, settings) -> PhotoOutcome:
    with store.transaction():
        # checked again inside the write transaction: another enrol run may have taken this
        # photo since (BEGIN IMMEDIATE serialises the check and the insert)
        cached = _cached_outcome(store, name, path, sha, embedder_id, settings)
        if cached is not None:
            return cached
        person_id = store.add_person(name)
        copy = keep_copy(path, ws.few_shot_dir / person_id, sha)
        got = ingest_found_face(
            store,
            copy,
            face,
            sha256=sha,
            source=f"{source}:{path}",
            person_id=person_id,
            embedder_id=embedder_id,
        )
        face_id = got.face_id
    return PhotoOutcome(str(path), name, True, None, face_id, person_id, False, face.quality)


# -- changing what is enrolled -----------------------------------------------------------------
def remove_photo(ws: Workspace, face_id: int) -> str:
    """Delete one enrolled face, its image row when no other face uses it, and the copy in
    ``few_shot_examples/`` when no image row points at it any more. Returns the person's name."""
    store = ws.open_store()
    try:
        face = store.face(int(face_id))
        with store.transaction() as conn:
            conn.execute("DELETE FROM faces WHERE id = ?", (face.id,))
            gone = conn.execute(
                "DELETE FROM images WHERE id = ? AND id NOT IN (SELECT image_id FROM faces)", (face.image_id,)
            ).rowcount
        if gone:
            copy = Path(face.image_path)
            still = store.conn.execute("SELECT 1 FROM images WHERE path = ?", (str(copy),)).fetchone()
            if not still and copy.resolve().is_relative_to(ws.few_shot_dir.resolve()):
                copy.unlink(missing_ok=True)
        return face.person_name or "-"
    finally:
        store.close()


def revoke_person(ws: Workspace, ref: str) -> int:
    """Revoke every face of a person: kept for the record, never trained on again (the next
    training leaves them out). Returns how many faces changed."""
    store = ws.open_store()
    try:
        person = store.person(ref)
        ids = [f.id for f in store.faces(person=person.id) if f.status != "revoked"]
        store.set_status(ids, "revoked")
        return len(ids)
    finally:
        store.close()

"""Collect: device output (``events.jsonl`` + unknown captures, SentinelCam ``facelist.csv``
rows with their frames, or a plain folder of face crops) into the store as candidate faces.

Every image is copied into the workspace (``images/collected/``) and keyed by its sha256, so
nothing is imported twice. The faces of new files are computed before anything is written, in
crash-isolated worker processes (``vision.batch``) or on the Dask cluster: a file
that crashes the face engine is skipped as ``crashed the face engine (signal N)`` and every
other one is collected. Each face is embedded with the workspace's engine (the device's
vector may come from another embedder) and keeps its provenance in ``meta``: device, source,
event time and the device's decision (name, proba, dist, margin). Over SSH the device's files
are first mirrored into ``inbox/<host>/`` with SFTP, then collected the same way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from facefleet import compute
from facefleet.errors import FacefleetError, ImageError
from facefleet.store.ingest import ingest_found_face, keep_copy
from facefleet.texttable import skipped_lines
from facefleet.vision.batch import Failed, Pool, worker_count
from facefleet.workspace import Workspace

log = logging.getLogger(__name__)

SOURCE = "collect"
EVENTS = "events.jsonl"
FACELIST = "facelist.csv"
WRITE_BATCH = 64  # faces per store transaction when they come precomputed (pool or cluster)


@dataclass
class CollectReport:
    """What a collection did."""

    added: list[int] = field(default_factory=list)  # new face ids
    duplicates: int = 0  # images already in the store (same content)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item, reason)

    def merge(self, other: CollectReport) -> None:
        self.added += other.added
        self.duplicates += other.duplicates
        self.skipped += other.skipped

    def summary(self) -> str:
        lines = [
            f"{len(self.added)} candidate faces added, {self.duplicates} already in the "
            f"store, {len(self.skipped)} skipped"
        ]
        return "\n".join(lines + skipped_lines(self.skipped))


@dataclass
class CropFace:
    """A face measured on a crop: box and landmarks in the crop's pixels."""

    box: tuple[int, int, int, int]
    landmarks: np.ndarray
    quality: dict[str, float]
    embedding: np.ndarray
    detector: str


# -- pure helpers -----------------------------------------------------------------------------
def event_meta(event: dict[str, Any], origin: str) -> dict[str, Any]:
    """Provenance kept with a face collected from an ``events.jsonl`` record."""
    return {
        "origin": origin,
        "device": event.get("device"),
        "source": event.get("source"),
        "event": event.get("run"),
        "event_time": event.get("ts"),
        "track_id": event.get("track_id"),
        "frame": event.get("frame"),
        "name": event.get("name"),
        "candidate": event.get("candidate"),
        "proba": event.get("score"),
        "dist": event.get("distance"),
        "margin": event.get("margin"),
        "model_version": event.get("model_version"),
        "sample": event.get("crop_kind"),  # "named": a sampled crop of a face the device named
    }


def sidecar_meta(side: dict[str, Any], mtime: float) -> dict[str, Any]:
    """Provenance from an unknown capture's sidecar when no event names it."""
    return {
        "origin": "capture",
        "device": side.get("device"),
        "source": side.get("source"),
        "event": side.get("run"),
        "event_time": datetime.fromtimestamp(mtime, timezone.utc).isoformat(timespec="seconds"),
        "track_id": side.get("track_id"),
        "frame": side.get("frame"),
        "name": side.get("name"),  # set on a named sample (kind "named")
        "candidate": side.get("candidate"),
        "proba": side.get("score"),
        "dist": side.get("distance"),
        "margin": side.get("margin"),
        "model_version": None,
        "sample": side.get("kind"),
    }


def track_key(run: Any, track_id: Any) -> str:
    return f"{run}/t{track_id}"


def events_by_crop(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last event of each crop file (by file name: device paths differ from ours) and of
    each track (a capture kept when its track ended has no event naming its file)."""
    out: dict[str, dict[str, Any]] = {}
    for e in events:
        out[track_key(e.get("run"), e.get("track_id"))] = e
        if e.get("crop"):
            out[Path(e["crop"]).name] = e
    return out


def largest(faces: list) -> Any:
    return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


# -- faces from pixels ------------------------------------------------------------------------
def face_from_crop(engine, rgb: np.ndarray) -> CropFace:
    """The face of a crop: the largest detection, else the whole crop aligned via landmarks
    found inside the full crop box (a crop is already a face)."""
    found = [f for f in engine.analyse(rgb, fallback=False) if f.embedding is not None]
    if found:
        f = largest(found)
        return CropFace(
            tuple(int(v) for v in f.box), f.landmarks, f.quality.as_dict(), f.embedding, f.detector
        )
    h, w = rgb.shape[:2]
    return face_in_box(engine, rgb, (0, 0, w, h), detector="crop")


def face_in_box(engine, rgb: np.ndarray, box: tuple[int, int, int, int], *, detector: str) -> CropFace:
    """Landmarks, chip, quality and embedding of the face inside a known box."""
    from facefleet.vision.engine import check_image
    from facefleet.vision.quality import measure_quality

    rgb = check_image(rgb)
    points = engine.landmarks(rgb, box)
    chip = engine.chip(rgb, points, box)
    vec = engine.embed_chips([chip])[0]
    quality = measure_quality(chip, box, points).as_dict()
    return CropFace(tuple(int(v) for v in box), points, quality, vec, detector)


def crop_face_task(engine, path: str, box: tuple[int, int, int, int] | None) -> CropFace | str:
    """One file's candidate face (on a Dask worker), or why there is none."""
    from facefleet.vision.image import load_image

    try:
        rgb = load_image(path)
        if box is None:
            return face_from_crop(engine, rgb)
        return face_in_box(engine, rgb, tuple(box), detector="sentinelcam")
    except (ImageError, FacefleetError) as exc:
        return str(exc)


# -- the collector --------------------------------------------------------------------------
class Collector:
    """Adds candidate faces to one workspace; one instance per collection."""

    def __init__(self, ws: Workspace, *, device: str | None = None) -> None:
        self.ws = ws
        self.device = device
        self.engine = ws.engine()
        self.embedder_id = self.engine.embedder.id
        self.store = ws.open_store()
        self.report = CollectReport()
        self.folder = ws.images_dir / "collected"
        self.cluster = compute.current()
        self.workers = ws.settings.vision.workers
        self._pool: Pool | None = None  # started for the first new file, kept for the others
        self._ready: dict[str, CropFace | str] = {}  # sha256 -> face computed ahead

    def prefetch(
        self, jobs: list[tuple[Path, tuple[int, int, int, int] | None]], *, here: bool = False
    ) -> None:
        """Analyse every new file of ``jobs`` first, on the Dask cluster (unless ``here``) or in
        crash-isolated worker processes (even a lone file: a scheduled collect must not die
        on the one new capture that crashes the engine, run after run); ``add`` then only
        writes."""
        from facefleet.fileio import sha256_file

        todo: dict[str, tuple[str, tuple]] = {}
        for path, box in jobs:
            try:
                sha = sha256_file(path)
            except OSError:
                continue  # add() reports it
            if sha not in self._ready and sha not in todo and self.store.image_by_sha(sha) is None:
                todo[sha] = (str(path), (box,))
        if not todo:
            return
        if self.cluster is not None and not here:
            from facefleet.vision import dask_backend

            results = dask_backend.map_files(
                crop_face_task,
                list(todo.values()),
                self.ws.vision_config(),
                self.cluster,
                embedder_id=self.embedder_id,
                desc="collect",
            )
        else:
            from facefleet.progress import progress

            count = worker_count(self.workers, len(todo))
            if self._pool is None:
                self._pool = Pool(count, self.ws.vision_config())
            self._pool.grow(count)
            jobs_ = [(crop_face_task, path, args) for path, args in todo.values()]
            results = progress(self._pool.run(jobs_), total=len(jobs_), desc="faces")
        for sha, result in zip(todo, results, strict=True):
            self._ready[sha] = result.message if isinstance(result, Failed) else result

    def batches(self, items: list) -> Iterator:
        """``items`` in groups written in one store transaction each, when the faces come
        precomputed (a file analysed here commits on its own: a long analysis must not hold
        the store's write lock)."""
        if not self._ready:
            yield from items
            return
        for start in range(0, len(items), WRITE_BATCH):
            with self.store.transaction():
                yield from items[start : start + WRITE_BATCH]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self.store.close()

    def _known(self, sha: str) -> bool:
        if self.store.image_by_sha(sha) is not None:
            self.report.duplicates += 1
            return True
        return False

    def add(
        self,
        path: Path,
        meta: dict[str, Any],
        *,
        box: tuple[int, int, int, int] | None = None,
    ) -> int | None:
        """Analyse one image file and add its face as a candidate (None when skipped)."""
        from facefleet.fileio import sha256_file
        from facefleet.vision.image import load_image

        try:
            sha = sha256_file(path)
        except OSError as exc:
            self.report.skipped.append((str(path), f"unreadable: {exc}"))
            return None
        if self._known(sha):
            return None
        face = self._ready.pop(sha, None)
        if face is None:
            try:
                rgb = load_image(path)
                if box is None:
                    face = face_from_crop(self.engine, rgb)
                else:
                    face = face_in_box(self.engine, rgb, box, detector="sentinelcam")
            except (ImageError, FacefleetError) as exc:
                face = str(exc)
        if isinstance(face, str):
            self.report.skipped.append((str(path), face))
            return None
        if self.device and not meta.get("device"):
            meta["device"] = self.device
        meta = {**meta, "file": path.name}
        copy = keep_copy(path, self.folder, sha, default_suffix=".jpg")
        source = f"{SOURCE}:{path}"
        face_id = ingest_found_face(
            self.store,
            copy,
            face,
            sha256=sha,
            source=source,
            status="candidate",
            meta=meta,
            embedder_id=self.embedder_id,
            new_image_only=True,
        ).face_id
        if face_id is None:  # another collector added it meanwhile
            self.report.duplicates += 1
            return None
        self.report.added.append(face_id)
        return face_id

    # -- the input kinds --------------------------------------------------------------------
    def captures(self, folder: Path, events: dict[str, dict[str, Any]]) -> None:
        """Unknown captures (JPEG + sidecar JSON) in ``folder``; events give provenance."""
        from facefleet.progress import progress

        jpgs = sorted(p for p in folder.glob("*.jpg") if not p.name.startswith("."))
        self.prefetch([(jpg, None) for jpg in jpgs])
        for jpg in progress(self.batches(jpgs), total=len(jpgs), desc="collect"):
            side: dict[str, Any] = {}
            side_path = jpg.with_suffix(".json")
            if side_path.is_file():
                try:
                    side = json.loads(side_path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    self.report.skipped.append((str(side_path), "unreadable sidecar"))
            event = events.get(jpg.name) or events.get(track_key(side.get("run"), side.get("track_id")))
            meta = (
                event_meta(event, "events")
                if event
                else sidecar_meta(side, jpg.stat().st_mtime)
                if side
                else {"origin": "crops", "source": str(jpg)}
            )
            if side.get("quality_score") is not None:
                meta["device_quality"] = side["quality_score"]
            self.add(jpg, meta)

    def crops(self, folder: Path) -> None:
        """A plain folder of face crops (no sidecars)."""
        from facefleet.progress import progress
        from facefleet.vision.image import iter_image_files

        files = list(iter_image_files([folder]))
        self.prefetch([(Path(p), None) for p in files])
        for path in progress(self.batches(files), total=len(files), desc="collect"):
            self.add(Path(path), {"origin": "crops", "source": str(path)})

    def facelist(self, csv_path: Path, images_dir: Path | None = None) -> None:
        """SentinelCam ``facelist.csv`` rows whose event frames are on disk (camwatcher layout
        ``images/<date>/<event>_<timestamp>.jpg``); each face is embedded inside its box."""
        from facefleet.registry import legacy

        rows = legacy.read_facelist(csv_path)
        images_dir = images_dir or csv_path.parent / "images"
        crops = legacy.device_crops(csv_path)
        todo: list[tuple[Path, dict[str, Any], tuple[int, int, int, int] | None]] = []
        for n, row in enumerate(rows, start=2):
            where = f"{csv_path.name} line {n}"
            try:
                rec = legacy._parse_row(row)
            except (ValueError, TypeError, KeyError) as exc:
                self.report.skipped.append((where, str(exc)))
                continue
            if rec is None:
                self.report.skipped.append((where, "marked for removal"))
                continue
            found = legacy.row_image(rec, images_dir, csv_path.parent, crops)
            if found is None:
                self.report.skipped.append((where, legacy.missing_image_reason(rec, images_dir)))
                continue
            frame, is_crop = found
            extra = rec["extra"]
            meta = {
                "origin": "device" if rec["device_row"] else "sentinelcam",
                "device": self.device,
                "source": rec["source"],
                "event": rec["event"],
                "event_time": rec["timestamp"],
                "name": rec["device_name"],
                "candidate": rec["device_name"],
                "proba": extra.get("proba"),
                "dist": extra.get("dist"),
                "margin": extra.get("margin"),
                "sentinelcam_status": rec["status"],
                "objid": rec["objid"],
            }
            todo.append((frame, meta, None if is_crop else rec["box"]))
        # a face per known box stays on this machine (the pool), not on the cluster
        self.prefetch([(frame, box) for frame, _, box in todo], here=True)
        for frame, meta, box in self.batches(todo):
            self.add(frame, meta, box=box)


def _read_events(path: Path) -> list[dict[str, Any]]:
    from facefleet.edge.events import read_events

    return read_events(path)


def collect(
    ws: Workspace, paths: list[Path | str], *, device: str | None = None, scheduler: str | None = None
) -> CollectReport:
    """Collect every path: a device folder (``events.jsonl`` and/or ``unknown/`` captures), an
    ``events.jsonl``, a ``facelist.csv``, a folder of captures or of plain crops.

    Captures and crops are analysed on the Dask cluster of ``scheduler`` / ``compute.scheduler``
    when there is one (SentinelCam rows, a face per known box, stay local), else in
    crash-isolated worker processes here; a file that crashes the face engine is skipped with
    that reason, the rest are collected. Only this process writes the store."""
    with compute.using(compute.for_workspace(ws, scheduler)):
        col = Collector(ws, device=device)
        try:
            for raw in paths:
                path = Path(raw).expanduser()
                if not path.exists():
                    raise FacefleetError(f"{path}: no such file or folder")
                collect_one(col, path)
        finally:
            col.close()
    return col.report


def _event_files(path: Path) -> list[Path]:
    return sorted(path.rglob(EVENTS)) if path.is_dir() else [path]


def collect_one(col: Collector, path: Path) -> None:
    """Dispatch one path to the right reader."""
    if path.is_file() and path.suffix == ".csv":
        col.facelist(path)
        return
    if path.is_file() and path.name.endswith(".jsonl"):
        events = _read_events(path)
        folders = {path.parent, path.parent / "unknown"}
        folders |= {Path(e["crop"]).parent for e in events if e.get("crop")}
        by_crop = events_by_crop(events)
        for folder in sorted(f for f in folders if f.is_dir()):
            col.captures(folder, by_crop)
        return
    if not path.is_dir():
        raise FacefleetError(f"{path}: expected a folder, an events.jsonl or a facelist.csv")
    events: list[dict[str, Any]] = []
    for ev in _event_files(path):
        events += _read_events(ev)
    by_crop = events_by_crop(events)
    capture_dirs = sorted({p.parent for p in path.rglob("*.jpg") if p.with_suffix(".json").is_file()})
    for folder in capture_dirs:
        col.captures(folder, by_crop)
    for csv_path in sorted(path.rglob(FACELIST)):
        images = csv_path.parent / "images"
        if images.is_dir():  # a SentinelCam data sink; our devices' CSVs repeat events.jsonl
            col.facelist(csv_path, images)
    if not capture_dirs and not events and not any(path.rglob(FACELIST)):
        col.crops(path)


# -- from a device over SSH ----------------------------------------------------------------------
def remote_dirs(host) -> tuple[str, str]:
    """(output dir, unknown-captures dir) on a device: host vars ``facefleet_output_dir`` and
    ``facefleet_unknown_dir``, else beside the models dir as ``facefleet recognize`` lays out.
    The sample of named faces sits beside the unknown captures, in ``named/``."""
    base = host.models_dir.rstrip("/").rsplit("/", 1)[0] or "/"
    out = host.vars.get("facefleet_output_dir") or f"{base}/output"
    unknown = host.vars.get("facefleet_unknown_dir") or f"{base}/few_shot_examples/unknown"
    return str(out), str(unknown)


async def _mirror(host, dest: Path, known_hosts: Path, accept_new: bool) -> int:
    """Copy the device's events and captures into ``dest``; returns files fetched. Files
    already mirrored with the same size are not fetched again."""

    import asyncssh

    from facefleet.ssh import SshTarget, connect

    out_dir, unknown_dir = remote_dirs(host)
    fetched = 0
    conn = await connect(SshTarget.of(host), known_hosts, accept_new=accept_new)
    async with conn, conn.start_sftp_client() as sftp:
        for remote, local, names in (
            (out_dir, dest / "output", (EVENTS,)),
            (unknown_dir, dest / "unknown", None),
            (f"{unknown_dir.rstrip('/').rsplit('/', 1)[0]}/named", dest / "named", None),
        ):
            try:
                entries = await sftp.readdir(remote)
            except asyncssh.SFTPError:
                log.warning("%s: no %s on the device", host.name, remote)
                continue
            local.mkdir(parents=True, exist_ok=True)
            for entry in entries:
                name = entry.filename
                if name.startswith(".") or (names and name not in names):
                    continue
                if not names and not name.endswith((".jpg", ".json")):
                    continue
                target = local / name
                size = entry.attrs.size
                if name != EVENTS and target.is_file() and target.stat().st_size == size:
                    continue
                tmp = target.with_name(f".{name}.part")
                await sftp.get(f"{remote}/{name}", str(tmp))
                tmp.replace(target)
                fetched += 1
    return fetched


def collect_remote(
    ws: Workspace,
    inventory_path: Path | str,
    host_name: str,
    *,
    known_hosts: Path | str | None = None,
    accept_new_host_keys: bool = False,
    scheduler: str | None = None,
) -> CollectReport:
    """Mirror one inventory host's events and captures over SFTP, then collect them."""
    import asyncio

    import asyncssh

    from facefleet.fleet.inventory import load_inventory
    from facefleet.ssh import known_hosts_path

    inv = load_inventory(inventory_path)
    if host_name not in inv.hosts:
        raise FacefleetError(
            f"{inventory_path}: no host {host_name!r} (hosts: {', '.join(sorted(inv.hosts))})"
        )
    host = inv.hosts[host_name]
    dest = ws.root / "inbox" / host.name
    kh = known_hosts_path(known_hosts)
    try:
        count = asyncio.run(_mirror(host, dest, kh, accept_new_host_keys))
    except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
        raise FacefleetError(f"{host.name}: ssh: {exc or type(exc).__name__}") from None
    log.info("%s: %d files fetched into %s", host.name, count, dest)
    return collect(ws, [dest], device=host.name, scheduler=scheduler)

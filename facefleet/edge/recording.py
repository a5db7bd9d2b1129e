"""The annotated video ``recognize --save`` writes (``output_<timestamp>.mp4``, MPEG-4 Part 2
as the Jetson script wrote it), and its repair when the process writing it was killed.

OpenCV's MP4 writer puts the index (``moov``) at the end of the file, so a process killed
mid-recording leaves frames that no player opens. :func:`repair` makes such a file play
again: the frames are intact in the ``mdat`` box, and the codec header they need lives only
in the lost index, but it depends on nothing but the frame size and rate, so it is taken from
a one-frame file written here. Header and frames make a raw MPEG-4 stream, which is decoded
and written again as a complete MP4 that replaces the broken one (atomically). What the
killed process had not yet flushed (its last few frames) is lost.

While a video is open, a hidden marker beside it (``.output_<timestamp>.mp4.open``) holds the
writer's process id, frame size and rate; a clean close removes it. :func:`repair_left` repairs
every video whose marker outlived its process: the supervisor calls it after an engine crash,
and every ``recognize`` calls it when it starts (after a power cut or a SIGKILL of the whole
run). A repair stages its files in ``.repair-<pid>-*`` beside the video; the staging folder of
a process killed mid-repair is removed by the next :func:`repair_left`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from facefleet.clock import file_stamp
from facefleet.errors import FacefleetError
from facefleet.fileio import atomic_write_text

log = logging.getLogger(__name__)

FOURCC = "mp4v"
VOS_START = b"\x00\x00\x01\xb0"  # MPEG-4 visual object sequence: where the codec header starts
VOP_START = b"\x00\x00\x01\xb6"  # a frame
GOV_START = b"\x00\x00\x01\xb3"  # a group of frames, just before a key frame
CHUNK = 1 << 20  # bytes copied at a time: a repair holds no whole video in memory
TAIL = 8 << 20  # where the torn last frame is looked for


@dataclass(frozen=True)
class Recording:
    """An open video: OpenCV's writer, its file and the marker that says it is open."""

    writer: object
    path: Path
    marker: Path

    def write(self, bgr) -> None:
        self.writer.write(bgr)

    def close(self) -> None:
        self.writer.release()
        self.marker.unlink(missing_ok=True)


def marker_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.open")


def open_recording(folder: Path, first, fps: float | None) -> Recording:
    """A new ``output_<timestamp>.mp4`` in ``folder`` for frames shaped like ``first``."""
    import cv2

    stem = f"output_{file_stamp()}"
    path, n = folder / f"{stem}.mp4", 1
    while path.exists() or marker_for(path).exists():  # an engine restarted within the second
        n += 1
        path = folder / f"{stem}_{n}.mp4"
    h, w = first.shape[:2]
    rate = fps if fps and fps > 0 else 25.0
    marker = marker_for(path)
    atomic_write_text(marker, json.dumps({"pid": os.getpid(), "width": w, "height": h, "fps": rate}))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC), rate, (w, h))
    if not writer.isOpened():
        marker.unlink(missing_ok=True)
        raise FacefleetError(f"{path}: cannot write video ({FOURCC} codec unavailable?)")
    log.info("saving annotated video to %s", path)
    return Recording(writer, path, marker)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        pass
    return True


def repair_left(folder: Path) -> list[tuple[Path, int | None]]:
    """Repair the videos in ``folder`` whose writer died with them open (see the module's
    docstring); (video, frames kept: 0 = removed, None = it was complete) for each."""
    _remove_dead_staging(folder)
    done = []
    for marker in sorted(folder.glob(".output_*.mp4.open")):
        try:
            info = json.loads(marker.read_text())
            pid, size, fps = int(info["pid"]), (int(info["width"]), int(info["height"])), float(info["fps"])
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("%s: unreadable video marker; removed", marker)
            marker.unlink(missing_ok=True)
            continue
        if _alive(pid):
            continue  # still being written (another recognize on this folder)
        video = marker.with_name(marker.name[1 : -len(".open")])
        kept = None
        if video.exists():
            try:
                kept = repair(video, *size, fps)
            except Exception as exc:  # noqa: BLE001 - the file stays as it was, said once
                log.error("%s: could not repair the video its crashed writer left: %s", video, exc)
                continue
        marker.unlink(missing_ok=True)
        if kept == 0:
            log.warning("%s: its writer died before a frame reached the disk; removed", video)
        elif kept:
            log.warning("%s: repaired after its writer died (%d frames kept)", video, kept)
        done.append((video, kept))
    return done


def _remove_dead_staging(folder: Path) -> None:
    """Remove the staging folders of repairs whose process is gone (killed mid-repair)."""
    for tmp in folder.glob(".repair-*"):
        pid = tmp.name.split("-")[1]
        if tmp.is_dir() and not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(tmp, ignore_errors=True)
            log.info("%s: removed the staging folder of an interrupted repair", tmp)


def top_level_boxes(f: BinaryIO) -> list[tuple[bytes, int, int, int, bool]]:
    """(type, offset, header length, size, cut) of each top-level ISO-BMFF box of the open
    file ``f`` (headers only are read); a box whose size was never written (0) or runs past
    the end is ``cut``: the file ends inside it, and its size is reported up to the end."""
    f.seek(0, os.SEEK_END)
    total = f.tell()
    out = []
    i = 0
    while i + 8 <= total:
        f.seek(i)
        size, kind = struct.unpack(">I4s", f.read(8))
        head = 8
        if size == 1:
            ext = f.read(8)
            if len(ext) < 8:
                break
            size, head = struct.unpack(">Q", ext)[0], 16
        cut = size == 0 or i + size > total
        out.append((kind, i, head, total - i if cut else size, cut))
        if cut or size < head:
            break
        i += size
    return out


def _boxes(path: Path) -> list[tuple[bytes, int, int, int, bool]]:
    with open(path, "rb") as f:
        return top_level_boxes(f)


def _has_index(boxes: list[tuple[bytes, int, int, int, bool]]) -> bool:
    return any(kind == b"moov" for kind, *_ in boxes)


def is_complete(path: Path) -> bool:
    """Whether the MP4 at ``path`` has its index (a cut-off file has none)."""
    return _has_index(_boxes(path))


def codec_header(data: bytes) -> bytes:
    """The MPEG-4 codec header (decoder specific info of the ``esds`` box) of a complete MP4."""
    i = data.find(VOS_START)
    if i < 2:
        raise FacefleetError("no MPEG-4 codec header in the reference video")
    n, k, shift = data[i - 1] & 0x7F, i - 2, 7  # its length: a base-128 number before it
    while k > 0 and data[k] & 0x80:
        n |= (data[k] & 0x7F) << shift
        shift += 7
        k -= 1
    if data[k] != 0x05:  # DecoderSpecificInfo tag
        raise FacefleetError("unexpected esds layout in the reference video")
    return data[i : i + n]


def _reference_header(width: int, height: int, fps: float) -> bytes:
    import cv2
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="facefleet-video-") as tmp:
        ref = Path(tmp) / "ref.mp4"
        w = cv2.VideoWriter(str(ref), cv2.VideoWriter_fourcc(*FOURCC), fps, (width, height))
        w.write(np.zeros((height, width, 3), np.uint8))
        w.release()
        return codec_header(ref.read_bytes())


def _copy_frames(src: BinaryIO, mdat: tuple[bytes, int, int, int, bool], dst: BinaryIO) -> None:
    """Copy the frames of the ``mdat`` box; when the file ends inside it, without its last
    frame, which the cut tore (found in the last ``TAIL`` bytes: far more than one frame)."""
    _, at, head, size, cut = mdat
    start, end = at + head, at + size
    if cut:
        tail_at = max(start, end - TAIL)
        src.seek(tail_at)
        tail = src.read(end - tail_at)
        vop = tail.rfind(VOP_START)
        if vop != -1:
            gov = tail.rfind(GOV_START, 0, vop)
            end = tail_at + (gov if gov != -1 and vop - gov <= 16 else vop)
    src.seek(start)
    left = end - start
    while left > 0:
        chunk = src.read(min(CHUNK, left))
        if not chunk:
            break
        dst.write(chunk)
        left -= len(chunk)


def repair(path: Path, width: int, height: int, fps: float) -> int | None:
    """Make the cut-off MP4 at ``path`` (``width`` x ``height`` at ``fps``) play again; the
    frames kept, 0 when it held none (the file is then removed), None when it was complete."""
    import cv2

    boxes = _boxes(path)
    if _has_index(boxes):
        return None
    mdat = next((b for b in boxes if b[0] == b"mdat"), None)
    frames = 0
    if mdat is not None and mdat[3] > mdat[2]:
        with tempfile.TemporaryDirectory(prefix=f".repair-{os.getpid()}-", dir=path.parent) as tmp:
            raw = Path(tmp) / "frames.m4v"
            with open(path, "rb") as src, open(raw, "wb") as dst:
                dst.write(_reference_header(width, height, fps))
                _copy_frames(src, mdat, dst)
            fixed = Path(tmp) / path.name  # .mp4: OpenCV picks the container by the name
            cap = cv2.VideoCapture(str(raw), cv2.CAP_FFMPEG)
            out = cv2.VideoWriter(str(fixed), cv2.VideoWriter_fourcc(*FOURCC), fps, (width, height))
            try:
                while True:
                    ok, frame = cap.read()
                    if not ok:
                        break
                    if frame.shape[:2] == (height, width):
                        out.write(frame)
                        frames += 1
            finally:
                cap.release()
                out.release()
            if frames:
                os.replace(fixed, path)
    if not frames:
        path.unlink(missing_ok=True)
    return frames

"""Repairing a video a killed ``recognize --save`` left, against writing it in the first place.

    taskset -c 0 .venv/bin/python bench/bench_video_repair.py [--seconds 60]

Writes ``--seconds`` of the hamilton clip (640x360, looped, 29.97 fps) with the same writer
``recognize --save`` uses, cuts the file before its index (what a SIGKILL leaves), then times
``recording.repair``. Prints frames/s of each, the file size and the peak memory of this
process (the repair streams the file, so memory does not grow with the video's length).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEFLEET_SHARED_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    import cv2

    from facefleet.edge.recording import _boxes, is_complete, open_recording, repair

    cap = cv2.VideoCapture(str(DATA / "video" / "short_hamilton_clip.mp4"))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    clip = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        clip.append(frame)
    n = int(args.seconds * fps)
    with tempfile.TemporaryDirectory(prefix="bench-repair-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        rec = open_recording(folder, clip[0], fps)
        for i in range(n):
            rec.write(clip[i % len(clip)])
        rec.close()
        write_s = time.perf_counter() - t0
        size = rec.path.stat().st_size
        moov = next(b for b in _boxes(rec.path) if b[0] == b"moov")
        os.truncate(rec.path, moov[1])  # the index gone, as a killed writer leaves it
        assert not is_complete(rec.path)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        kept = repair(rec.path, clip[0].shape[1], clip[0].shape[0], fps)
        repair_s = time.perf_counter() - t0
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{n} frames 640x360 ({args.seconds:g} s of video), file {size / 1e6:.1f} MB")
    print(f"write  (recognize --save's writer): {n / write_s:7.0f} frames/s  ({write_s:.1f} s)")
    rate = kept / repair_s
    print(f"repair (decode + write again):      {rate:7.0f} frames/s  ({repair_s:.1f} s, {kept} kept)")
    print(f"peak RSS {rss0 / 1024:.0f} MB before the repair, {rss1 / 1024:.0f} MB after")
    return 0


if __name__ == "__main__":
    sys.exit(main())

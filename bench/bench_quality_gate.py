"""Quality gate on the shared photos: frontalness and colour of every photo with one face, so
the default gates (``quality.min_frontalness``, the greyscale/IR flag) lose no good photo.

    .venv/bin/python bench/bench_quality_gate.py [--data ../shared/data/faces] [--lfw 700]

Measured 2026-12-01 (loaded machine, one core): 1,192 one-face photos (five_celebrity 111,
ORL 389, examples 26, an LFW sample of 666): frontalness min 0.695, 1st percentile 0.82,
median 0.96. So the default gate is 0.5: under every shared photo, with room to spare, and
still refusing a face whose nose sits three times nearer one eye than the other (a turned
head). Greyscale (mean channel spread < 3): 388 of 389 ORL photos, 5 of 111 five_celebrity
(black-and-white photos), 1 of 666 LFW; colour portraits spread 11-124.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    from facefleet.settings import QualitySettings
    from facefleet.vision.image import iter_image_files, load_image
    from facefleet.vision.quality import GREYSCALE_SPREAD

    MIN_FRONTALNESS = QualitySettings().min_frontalness
    from facefleet.workspace import Workspace

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "faces")
    ap.add_argument("--lfw", type=int, default=700, help="LFW photos to sample (bounded run)")
    args = ap.parse_args()
    engine = Workspace.init(tempfile.mkdtemp(prefix="bench-quality-")).engine()
    sets = {d: sorted(iter_image_files([args.data / d])) for d in ("five_celebrity", "orl", "examples")}
    lfw = sorted(iter_image_files([args.data / "lfw_dev"]))
    random.Random(0).shuffle(lfw)
    sets["lfw_dev sample"] = lfw[: args.lfw]
    t0 = time.perf_counter()
    everyone = []
    for name, files in sets.items():
        front, grey = [], 0
        for path in files:
            try:
                faces = engine.analyse(load_image(path), embed=False, fallback=False)
            except Exception:  # noqa: BLE001 - unreadable files are not photos to gate
                continue
            if len(faces) != 1:
                continue
            front.append(faces[0].quality.frontalness)
            grey += bool(faces[0].quality.greyscale)
        everyone += front
        f = np.array(front)
        print(
            f"{name:15s} {len(f):5d} one-face photos  frontalness min {f.min():.3f} "
            f"p1 {np.percentile(f, 1):.3f} median {np.median(f):.3f}  greyscale {grey}"
        )
    f = np.array(everyone)
    lost = int((f < MIN_FRONTALNESS).sum())
    print(
        f"all {len(f)}: min frontalness {f.min():.3f}; default gate {MIN_FRONTALNESS} loses {lost}; "
        f"greyscale spread {GREYSCALE_SPREAD}; {time.perf_counter() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

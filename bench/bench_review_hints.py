"""How often the Review page's "looks like" hints are right, on lfw_dev.

    .venv/bin/python bench/bench_review_hints.py [--data ../shared/data/faces/lfw_dev]

The first 3 photos (sorted by name) of each of the 452 people are enrolled; the hint is
``curate.clusters``' own maths (``set_stats``, ``set_distances``, ``nearest_sets``). Per
distance limit, it prints how often a hint names the right person and the wrong one for

* a person's other photos taken together as one cluster (a camera's misses of one person),
* one such photo alone (a cluster of one face),
* one stranger's photo (``strangers/``: every hint is wrong),

and, as the peer, the same for the device's usual rule: the nearest enrolled face within
dlib's 0.6. Embeddings come from ``bench_open_set_rules.py``'s cache.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "faces" / "lfw_dev")
    parser.add_argument("--cache", type=Path, default=REPO / "bench" / "results" / "lfw_dev_embeddings.npz")
    args = parser.parse_args()

    from bench_open_set_rules import embeddings, split

    from facefleet.curate.clusters import LOOKS_LIKE_DISTANCE, nearest_sets, set_distances, set_stats
    from facefleet.registry.inference import pairwise_distances

    z = embeddings(args.data, args.cache)
    E = z["E"].astype(np.float64)
    gal, known, stranger, y, names = split(args.data, z["paths"])
    yg, yk = y[gal], y[known]
    g_mean, g_var = set_stats(E[gal], yg, len(names))
    owners = np.unique(yk)
    c_mean, c_var = set_stats(E[known], np.searchsorted(owners, yk), len(owners))
    sets = {
        "a person's other photos as one cluster": (set_distances(c_mean, c_var, g_mean, g_var), owners),
        "one photo of an enrolled person": (
            set_distances(E[known], np.zeros(known.sum()), g_mean, g_var),
            yk,
        ),
        "one stranger's photo": (set_distances(E[stranger], np.zeros(stranger.sum()), g_mean, g_var), None),
    }
    print(
        f"{len(names)} people enrolled (3 photos each), {known.sum()} other photos, "
        f"{stranger.sum()} strangers"
    )
    print(f"{'limit':>6s}  {'what':52s} {'right':>7s} {'wrong':>7s}")
    for limit in (0.5, LOOKS_LIKE_DISTANCE, 0.6):
        for what, (dist, truth) in sets.items():
            best, _ = nearest_sets(dist, limit)
            hinted = best >= 0
            right = hinted & (best == truth) if truth is not None else np.zeros(len(best), bool)
            mark = " (default)" if limit == LOOKS_LIKE_DISTANCE else ""
            wrong = 100 * (hinted & ~right).mean()
            print(f"{limit:6.2f}  {what:52s} {100 * right.mean():6.1f}% {wrong:6.1f}%{mark}")
    # the peer: the nearest enrolled face within dlib's 0.6
    for what, X, truth in (
        ("one photo of an enrolled person", E[known], yk),
        ("one stranger's photo", E[stranger], None),
    ):
        d = pairwise_distances(X, E[gal])
        near = d.argmin(axis=1)
        hinted = d.min(axis=1) < 0.6
        right = hinted & (yg[near] == truth) if truth is not None else np.zeros(len(X), bool)
        print(
            f"{'peer':>6s}  {what + ' (nearest face < 0.6)':52s} {100 * right.mean():6.1f}% "
            f"{100 * (hinted & ~right).mean():6.1f}%"
        )


if __name__ == "__main__":
    main()

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
from collections import defaultdict
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

    from bench_open_set_rules import embeddings

    from facefleet.curate.clusters import LOOKS_LIKE_DISTANCE, nearest_sets, set_distances, set_stats
    from facefleet.registry.inference import pairwise_distances

    z = embeddings(args.data, args.cache)
    E = z["E"].astype(np.float64)
    people: dict[str, list[int]] = defaultdict(list)
    strangers = []
    for i, p in enumerate(z["paths"]):
        parts = Path(str(p)).parts
        (people[parts[-2]].append(i) if parts[-3] == "people" else strangers.append(i))
    names = sorted(people)
    gi, gy, pi, py = [], [], [], []
    for k, n in enumerate(names):
        ix = sorted(people[n], key=lambda i: str(z["paths"][i]))
        gi += ix[:3]
        gy += [k] * len(ix[:3])
        pi += ix[3:]
        py += [k] * len(ix[3:])
    gy_a, py_a = np.array(gy), np.array(py)
    g_mean, g_var = set_stats(E[gi], gy_a, len(names))
    owners = np.unique(py_a)
    c_mean, c_var = set_stats(E[pi], np.searchsorted(owners, py_a), len(owners))
    sets = {
        "a person's other photos as one cluster": (set_distances(c_mean, c_var, g_mean, g_var), owners),
        "one photo of an enrolled person": (set_distances(E[pi], np.zeros(len(pi)), g_mean, g_var), py_a),
        "one stranger's photo": (set_distances(E[strangers], np.zeros(len(strangers)), g_mean, g_var), None),
    }
    print(f"{len(names)} people enrolled (3 photos each), {len(pi)} other photos, {len(strangers)} strangers")
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
        ("one photo of an enrolled person", E[pi], py_a),
        ("one stranger's photo", E[strangers], None),
    ):
        d = pairwise_distances(X, E[gi])
        near = d.argmin(axis=1)
        hinted = d.min(axis=1) < 0.6
        right = hinted & (gy_a[near] == truth) if truth is not None else np.zeros(len(X), bool)
        print(
            f"{'peer':>6s}  {what + ' (nearest face < 0.6)':52s} {100 * right.mean():6.1f}% "
            f"{100 * (hinted & ~right).mean():6.1f}%"
        )


if __name__ == "__main__":
    main()

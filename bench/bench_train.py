"""Benchmark the model search: synthetic clustered 128-D unit embeddings, 50 people x 200.

    python bench/bench_train.py                 # facefleet's search (halving, pruned grid)
    python bench/bench_train.py --baseline --time-limit 900
                                                # + plain GridSearchCV(SVC(probability=True))

Reports wall time, peak memory (this process and its worker processes) and accuracy on
fresh faces of the same people. The baseline runs in a child process that is stopped at
the time limit.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
import warnings

import numpy as np

GRID = {"C": [0.001, 0.01, 0.1, 1, 10, 100, 1000], "gamma": [1e-1, 1e-2, 1e-3, 1e-4, 1e-5]}


def synthetic(people: int, per: int, seed: int, noise: float = 0.042):
    """Unit vectors around unit centres; centres share a common direction so that people are
    about as close as real faces (distances ~0.4-0.6 within, ~0.9-1.1 between)."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=128)
    centres = common / np.linalg.norm(common) + 0.065 * rng.normal(size=(people, 128))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    X = np.repeat(centres, per, axis=0) + noise * rng.normal(size=(people * per, 128))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), np.repeat(np.arange(people), per)


def data(args):
    X, y = synthetic(args.people, args.per + args.test, args.seed)
    is_test = np.tile(np.arange(args.per + args.test) >= args.per, args.people)
    return X[~is_test], y[~is_test], X[is_test], y[is_test]


def peak_mb() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return round(own, 1), round(kids, 1)


def run_ours(args) -> dict:
    from facefleet.train.classifier import SearchSpace, fit_classifier

    X, y, Xt, yt = data(args)
    t0 = time.perf_counter()
    fitted = fit_classifier(X, y, SearchSpace(n_jobs=args.n_jobs, method=args.method))
    secs = time.perf_counter() - t0
    if fitted.method == "svm":
        pred = fitted.estimator.predict(Xt)
    else:
        cents = np.stack([X[y == c].mean(0) for c in np.unique(y)])
        pred = np.argmin(((Xt[:, None, :] - cents[None]) ** 2).sum(-1), axis=1)
    own, kids = peak_mb()
    return {
        "who": "facefleet",
        "seconds": round(secs, 1),
        "method": fitted.method,
        "params": fitted.params,
        "cv_score": fitted.cv_score,
        "candidates_scored": fitted.candidates,
        "rbf_pruned_as_linear": fitted.pruned,
        "test_accuracy": float((pred == yt).mean()),
        "peak_rss_mb": own,
        "peak_rss_children_mb": kids,
    }


def _baseline(args, queue) -> None:
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    X, y, Xt, yt = data(args)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grid = [{"kernel": ["rbf"], **GRID}, {"kernel": ["linear"], "C": GRID["C"]}]
        gs = GridSearchCV(SVC(probability=True, class_weight="balanced"), grid, cv=5, n_jobs=args.n_jobs).fit(
            X, y
        )
    secs = time.perf_counter() - t0
    own, kids = peak_mb()
    queue.put(
        {
            "who": "baseline GridSearchCV(SVC(probability=True)) 5-fold",
            "seconds": round(secs, 1),
            "params": gs.best_params_,
            "cv_score": gs.best_score_,
            "test_accuracy": float((gs.predict(Xt) == yt).mean()),
            "peak_rss_mb": own,
            "peak_rss_children_mb": kids,
        }
    )


def run_baseline(args) -> dict:
    queue: mp.Queue = mp.get_context("fork").Queue()
    proc = mp.get_context("fork").Process(target=_baseline, args=(args, queue))
    t0 = time.perf_counter()
    proc.start()
    proc.join(args.time_limit)
    if proc.is_alive():
        proc.terminate()  # loky workers of the child exit when their parent goes
        proc.join(10)
        return {
            "who": "baseline",
            "seconds": f"> {args.time_limit} (stopped at the limit)",
            "finished": False,
            "elapsed": round(time.perf_counter() - t0, 1),
        }
    return queue.get(timeout=5)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=50)
    ap.add_argument("--per", type=int, default=200, help="training faces per person")
    ap.add_argument("--test", type=int, default=50, help="fresh test faces per person")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", default="svm", help="auto | svm (default svm: the SVC search)")
    ap.add_argument("--baseline", action="store_true", help="also run the plain grid search")
    ap.add_argument("--time-limit", type=float, default=1200.0, help="baseline limit, seconds")
    args = ap.parse_args(argv)
    print(json.dumps(run_ours(args), default=str), flush=True)
    if args.baseline:
        print(json.dumps(run_baseline(args), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Open-set rule candidates on lfw_dev: which score keeps strangers out at the best recall.

    .venv/bin/python bench/bench_open_set_rules.py [--data ../shared/data/faces/lfw_dev]

Same split as ``bench_lfw_open_set.py`` (first 3 photos of each of the 452 people enrolled,
the rest and the 1,000 strangers probed), but on embeddings computed once (the largest face of
each photo, plus the embedding of its mirrored chip) and cached in ``bench/results/`` so that
each rule is scored in milliseconds. Per rule, one threshold for everybody:

* ``oracle``: the threshold that names 1 % of the *test* strangers, and the share of known
  probes then named correctly (how good the score is; not available in real life);
* ``calibrated``: the threshold that names ``target`` of the leave-whole-person-out trials
  of the gallery (each enrolled face against the others, its own person removed), as
  training does; the estimate, the measured strangers named, and known named correctly.

Views: the plain embeddings, the average with the mirrored chip's, and the embeddings whitened
by the enrolled faces' within-person covariance. Also prints how stranger scores vary with
face size and sharpness (quality-aware thresholds), and whether the training's estimate
(``fit_open_set``, default rule) predicts strangers of the enrolled people's own population:
over random halves of a group of people (all, the most photographed, the others), one half
enrolled, every photo of the other half played as a stranger, next to the people outside the
group and the strangers of ``lfw_dev/strangers``.
``--enrol last`` enrols the last 3 photos of each person instead (another split).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def embeddings(data: Path, cache: Path) -> dict[str, np.ndarray]:
    if cache.is_file():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    os.environ.setdefault("FACEFLEET_NO_PROGRESS", "1")
    import tempfile

    from facefleet.vision.batch import analyse_files
    from facefleet.vision.image import is_image_name
    from facefleet.workspace import Workspace

    paths = sorted(str(p) for p in (data / "people").glob("*/*") if is_image_name(p))
    paths += sorted(str(p) for p in (data / "strangers").iterdir() if is_image_name(p))
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.init(Path(tmp) / "ws")
        engine = ws.engine()
        keep, E, chips, Q = [], [], [], []
        for a in analyse_files(paths, ws.vision_config(), keep_chips=True, engine=engine):
            faces = [f for f in a.faces if f.embedding is not None]
            if faces:
                f = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
                keep.append(a.path)
                E.append(f.embedding)
                chips.append(f.chip)
                Q.append([f.quality["size_px"], f.quality["sharpness"]])
        F = engine.embed_chips(np.stack(chips)[:, :, ::-1].copy())
    out = {"paths": np.array(keep), "E": np.stack(E), "F": np.asarray(F), "Q": np.array(Q)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def split(data: Path, paths: np.ndarray, enrol: str = "first"):
    """The bench's split of the cached photos: masks of the enrolled ones (the first or last 3
    of each person, sorted by name), the other photos of those people and the strangers, each
    photo's class (-1: a stranger) and the people's names."""
    paths = [Path(p) for p in paths]
    stranger = np.array([p.parent.name == "strangers" for p in paths])
    person = np.array(["" if s else p.parent.name for p, s in zip(paths, stranger)])
    enrolled: set[str] = set()
    for d in sorted((data / "people").iterdir()):
        photos = sorted(d.iterdir())
        enrolled.update(str(p) for p in (photos[:3] if enrol == "first" else photos[-3:]))
    gal = np.array([str(p) in enrolled for p in paths])
    labels = sorted(set(person[gal]))
    index = {n: i for i, n in enumerate(labels)}
    y = np.array([index.get(n, -1) for n in person])
    return gal, ~gal & ~stranger, stranger, y, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "faces" / "lfw_dev")
    parser.add_argument("--cache", type=Path, default=REPO / "bench" / "results" / "lfw_dev_embeddings.npz")
    parser.add_argument("--target", type=float, default=0.01)
    parser.add_argument("--enrol", choices=("first", "last"), default="first", help="which 3 photos to enrol")
    parser.add_argument("--halves", type=int, default=100, help="random halves for the population check")
    parser.add_argument(
        "--only", choices=("rules", "population", "reviewed", "regulars"), help="run one part alone"
    )
    args = parser.parse_args()
    from facefleet.registry.inference import pairwise_distances
    from facefleet.train.thresholds import OpenSetParams, centroids, class_distances

    default_margin = OpenSetParams().margin

    z = embeddings(args.data, args.cache)
    gal, known, stranger, y, labels = split(args.data, z["paths"], args.enrol)
    K = len(labels)
    yg, yk = y[gal], y[known]
    print(f"{gal.sum()} enrolled faces of {K} people, {known.sum()} known probes, {stranger.sum()} strangers")

    views = {"plain": z["E"].astype(np.float64), "flip-averaged": (z["E"] + z["F"]).astype(np.float64) / 2}
    views["within-person whitened (WCCN, shrunk halfway)"] = whiten(views["plain"], gal, yg, K, shrink=0.5)

    def first_second(D):
        two = np.sort(D, axis=1)[:, :2]
        return np.argmin(D, axis=1), two[:, 0], two[:, 1]

    def rules(D, Cd, zstats):
        """Rule name -> (score, candidate) from nearest-face (D) and centroid (Cd) distances."""
        out = {}
        c, d1, d2 = first_second(D)
        out["nearest face distance"] = (d1, c)
        out["nearest face, margin 0.5"] = (d1 - 0.5 * d2, c)
        cc, e1, e2 = first_second(Cd)
        out["centroid distance"] = (e1, cc)
        for b in (0.3, 0.5, 0.6, 0.7):
            tag = " (default)" if b == default_margin else ""
            out[f"centroid, margin {b}{tag}"] = (e1 - b * np.minimum(e2, 1.0), cc)
        out["centroid, ratio d1/d2"] = (e1 / e2, cc)
        rest = np.sort(Cd, axis=1)[:, 1:]
        rest = np.where(np.isfinite(rest), rest, np.nan)
        out["centroid, T-norm (cohort: other people)"] = (
            (e1 - np.nanmean(rest, 1)) / np.nanstd(rest, 1),
            cc,
        )
        mu, sd = zstats
        margin = e1 - default_margin * np.minimum(e2, 1.0)
        out[f"centroid margin {default_margin}, Z-norm per person"] = ((margin - mu[cc]) / sd[cc], cc)
        return out

    for view, V in views.items():
        if args.only and view != "plain":
            continue
        Xg, Xk, Xs = V[gal], V[known], V[stranger]
        C = centroids(Xg, yg, K)
        Dg, Dk, Ds = (class_distances(X, Xg, yg, K) for X in (Xg, Xk, Xs))
        Cg, Ck, Cs = (pairwise_distances(X, C) for X in (Xg, Xk, Xs))
        # leave-whole-person-out trials: own person gone (nearest-face: own faces gone too)
        Dt, Ct = Dg.copy(), Cg.copy()
        Dt[np.arange(len(yg)), yg] = np.inf
        Ct[np.arange(len(yg)), yg] = np.inf
        # Z-norm statistics: each person's scores against the other people's gallery faces
        two = np.sort(Ct, axis=1)[:, :2]
        S = Ct - default_margin * np.minimum(np.where(Ct <= two[:, :1], two[:, 1:2], two[:, :1]), 1.0)
        S[np.arange(len(yg)), yg] = np.nan
        zstats = (np.nanmean(S, 0), np.nanstd(S, 0))
        rt, rk, rs = rules(Dt, Ct, zstats), rules(Dk, Ck, zstats), rules(Ds, Cs, zstats)
        if args.only in (None, "rules"):
            rule_table(view, rt, rk, rs, yk, args.target)
        if view != "plain":
            continue
        if args.only in (None, "rules"):
            (ss, _) = rs[f"centroid, margin {default_margin} (default)"]
            q = z["Q"][stranger]
            r_size = np.corrcoef(ss, q[:, 0])[0, 1]
            r_sharp = np.corrcoef(ss, q[:, 1])[0, 1]
            print(f"quality: stranger scores vs face size r={r_size:+.3f}, vs sharpness r={r_sharp:+.3f}")
        if args.only in (None, "population"):
            population_check(Xg, yg, V[known], yk, Xs, args.target, args.halves)
        if args.only in (None, "reviewed"):
            reviewed_check(Cg, yg, Ck, yk, Cs, Xs, args.target, args.halves)
        if args.only in (None, "regulars"):
            repeat_check(Xg, yg, V[known], yk, args.target, args.halves)


def rule_table(view: str, rt: dict, rk: dict, rs: dict, yk: np.ndarray, target: float) -> None:
    """Each rule at the oracle threshold and calibrated on the leave-whole-person-out trials."""
    from facefleet.train.thresholds import calibrate

    print(f"\n{view} embeddings; oracle: 1 % of the test strangers named; calibrated: {target}")
    print(f"{'rule':42} {'oracle: known named':>20} {'est.':>7} {'measured':>9} {'known named':>12}")
    for name in rt:
        (st, _), (sk, ck), (ss, _) = rt[name], rk[name], rs[name]
        o = np.nextafter(np.sort(ss)[len(ss) // 100], -np.inf)  # names exactly 1 %
        oracle = float(((sk <= o) & (ck == yk)).mean())
        t = calibrate(st, target)
        est, meas = float((st <= t).mean()), float((ss <= t).mean())
        named = float(((sk <= t) & (ck == yk)).mean())
        cells = f"{100 * oracle:19.1f}% {100 * est:6.2f}% {100 * meas:8.2f}% {100 * named:11.1f}%"
        print(f"{name:42} {cells}")


def whiten(E: np.ndarray, gal: np.ndarray, yg: np.ndarray, k: int, shrink: float) -> np.ndarray:
    """``E`` seen through the enrolled faces' pooled within-person covariance (WCCN), shrunk
    toward its mean variance: directions in which one person's photos vary count less."""
    from facefleet.train.thresholds import centroids

    X = E[gal]
    R = X - centroids(X, yg, k)[yg]
    within = R.T @ R / (len(X) - k)
    s2 = float(np.trace(within)) / len(within)
    ev, V = np.linalg.eigh((1 - shrink) * within + shrink * s2 * np.eye(len(within)))
    return E @ (V @ np.diag(np.sqrt(s2 / ev)) @ V.T)


def decide(D: np.ndarray, thresholds: np.ndarray, params) -> tuple[np.ndarray, np.ndarray]:
    """Named or not, and the candidate, per face from its centroid distances ``D``."""
    from facefleet.train.thresholds import margin_scores

    s = margin_scores(D, params)
    return (s.score <= thresholds[s.candidate]) & (s.distance <= params.max_threshold), s.candidate


def enrol_part(Xg, yg, enrolled):
    """Only the ``enrolled`` people's gallery faces: the old-to-new class map, their classes,
    centroids and centroid distances."""
    from facefleet.registry.inference import pairwise_distances
    from facefleet.train.thresholds import centroids

    me = np.isin(yg, enrolled)
    remap = np.full(int(yg.max()) + 1, -1)
    remap[enrolled] = np.arange(len(enrolled))
    ye = remap[yg[me]]
    C = centroids(Xg[me], ye, len(enrolled))
    return remap, ye, C, pairwise_distances(Xg[me], C)


def population_check(Xg, yg, Xk, yk, Xs, target: float, halves: int) -> None:
    """The training's estimate against strangers of the enrolled people's own population and
    of others, default rule and thresholds, averaged over random halves: of all the people, of
    those with 6 or more photos (the most photographed) and of those with 4-5. One half is
    enrolled (3 photos each); every photo of the other half is a stranger of the same
    population, every photo of the people outside the group one of another, and so is the
    strangers folder (people with one LFW photo)."""
    from facefleet.registry.inference import pairwise_distances
    from facefleet.train.thresholds import OpenSetParams, fit_open_set

    params = OpenSetParams(target_far=target)
    k = int(yg.max()) + 1
    photos = np.bincount(yg, minlength=k) + np.bincount(yk[yk >= 0], minlength=k)
    X = np.vstack([Xg, Xk])
    y = np.concatenate([yg, yk])
    print(f"\npopulation check ({halves} random halves, target {target}): strangers named")
    head = f"{'people (half enrolled)':52} {'estimate':>9} {'same pop. (sd, se)':>21}"
    print(f"{head} {'other pop.':>11} {'folder':>8} {'known named':>12}")
    for group, members in (
        ("all", np.arange(k)),
        ("with 6+ photos", np.flatnonzero(photos >= 6)),
        ("with 4-5 photos", np.flatnonzero(photos <= 5)),
    ):
        rng = np.random.default_rng(0)
        outside = np.setdiff1d(np.arange(k), members)
        rows: list = []
        for _ in range(halves):
            perm = rng.permutation(members)
            enrolled, out = perm[: len(perm) // 2], perm[len(perm) // 2 :]
            remap, ye, C, D = enrol_part(Xg, yg, enrolled)
            fit = fit_open_set(D, ye, params)
            probes = np.isin(yk, enrolled)

            def named(X, C=C, fit=fit):  # no negatives: every threshold is the system's
                return decide(pairwise_distances(X, C), fit.thresholds, params)

            hit, cand = named(Xk[probes])
            other = named(X[np.isin(y, outside)])[0].mean() if len(outside) else np.nan
            rows.append(
                (
                    fit.far.rate,
                    named(X[np.isin(y, out)])[0].mean(),
                    other,
                    named(Xs)[0].mean(),
                    (hit & (cand == remap[yk[probes]])).mean(),
                )
            )
        est, same, other, folder, known = 100 * np.mean(rows, axis=0)
        # one half's rate varies a lot (a person with a look-alike enrolled is named on every
        # photo): its spread over halves, and the standard error of estimate - rate
        sd = 100 * np.std([x[1] for x in rows], ddof=1)
        se = 100 * np.std([x[0] - x[1] for x in rows], ddof=1) / np.sqrt(len(rows))
        same_cell = f"{same:.2f}% ({sd:.2f}, {se:.2f})"
        other_cell = "-" if np.isnan(other) else f"{other:.2f}%"
        cells = f"{est:8.2f}% {same_cell:>21} {other_cell:>11} {folder:7.2f}%"
        print(f"{f'{group} ({len(members)})':52} {cells} {known:11.1f}%")


def reviewed_check(Cg, yg, Ck, yk, Cs, Xs, target: float, splits: int) -> None:
    """Strangers the cameras saw: a random part of the strangers folder is reviewed, the rest
    probed. Pooled with the gallery's own trials (what training does below 4 admitted) against
    the reviewed strangers alone (what it does from there on); estimate, strangers named and
    known named, averaged over random splits, with the spread of the rate one split gets.
    The reviewed faces are grouped by person as training groups them (``train.grouping``)."""
    from facefleet.train.grouping import agglomerate
    from facefleet.train.thresholds import (
        OpenSetParams,
        calibrate,
        estimate,
        fit_open_set,
        leave_group_out_thresholds,
        margin_scores,
        strangers_take_over,
    )

    params = OpenSetParams(target_far=target)
    k = int(yg.max()) + 1

    def alone(D, groups):  # calibrated on the reviewed strangers alone, whatever their number
        s = margin_scores(D, params)
        s = np.where(s.distance > params.max_threshold, np.inf, s.score)
        own = leave_group_out_thresholds(s, groups, target)
        return np.full(k, min(calibrate(s, target), params.max_threshold)), estimate(s <= own, groups).rate

    print(f"\nreviewed strangers ({splits} random splits of the strangers folder, target {target})")
    head = f"{'reviewed':>8} {'calibrated on':30} {'estimate':>9} {'rest named (sd, max)':>24}"
    print(f"{head} {'known named':>12}")
    rng = np.random.default_rng(0)
    for n in (100, 300, 498, 499, 500):
        rows: dict[str, list] = {"gallery + reviewed": [], "reviewed alone": []}
        for _ in range(splits):
            perm = rng.permutation(len(Cs))
            seen, rest = Cs[perm[:n]], Cs[perm[n:]]
            groups = agglomerate(Xs[perm[:n]])
            fit = fit_open_set(Cg, yg, params, strangers=seen, stranger_groups=groups)
            training = (fit.thresholds, fit.far.rate)
            takes = strangers_take_over(n, target)
            pooled, own = (None, training) if takes else (training, alone(seen, groups))
            for name, got in (("gallery + reviewed", pooled), ("reviewed alone", own)):
                if got is None:
                    continue
                hit, cand = decide(Ck, got[0], params)
                rows[name].append(
                    (got[1], decide(rest, got[0], params)[0].mean(), (hit & (cand == yk)).mean())
                )
        for name, r in rows.items():
            if not r:
                continue
            r = 100 * np.array(r)
            rest_cell = f"{r[:, 1].mean():.2f}% ({r[:, 1].std(ddof=1):.2f}, {r[:, 1].max():.2f})"
            training = " (training)" if (name == "reviewed alone") == strangers_take_over(n, target) else ""
            cells = f"{r[:, 0].mean():8.2f}% {rest_cell:>24} {r[:, 2].mean():11.1f}%"
            print(f"{n:8d} {name + training:30} {cells}")


def repeat_check(Xg, yg, Xk, yk, target: float, splits: int) -> None:
    """Regulars: strangers the cameras see again and again. Half the people are enrolled (3
    photos each); every photo of 100 of the others is a reviewed capture (about 530 faces of
    100 people); the rest of the others are new strangers of the same population. Each
    reviewed face counted as its own person against the faces grouped by person
    (``train.grouping``, what training does): which trials set the threshold, the estimate
    and its interval against the new strangers named, and known photos named."""
    from facefleet.registry.inference import pairwise_distances
    from facefleet.train.grouping import agglomerate
    from facefleet.train.thresholds import OpenSetParams, fit_open_set

    params = OpenSetParams(target_far=target)
    k = int(yg.max()) + 1
    X, y = np.vstack([Xg, Xk]), np.concatenate([yg, yk])
    print(f"\nregulars ({splits} random splits: {k // 2} enrolled, 100 reviewed with all their photos)")
    head = f"{'reviewed faces counted as':28} {'calibrated on':>24} {'estimate (interval)':>22}"
    print(f"{head} {'new named (sd)':>15} {'covered':>8} {'known named':>12}")
    rng = np.random.default_rng(0)
    rows: dict[str, list] = {"one person each": [], "grouped by person (training)": []}
    for _ in range(splits):
        perm = rng.permutation(k)
        enrolled, regulars, new = perm[: k // 2], perm[k // 2 : k // 2 + 100], perm[k // 2 + 100 :]
        remap, ye, C, D = enrol_part(Xg, yg, enrolled)
        captures = X[np.isin(y, regulars)]
        S = pairwise_distances(captures, C)
        probes = np.isin(yk, enrolled)
        for name, groups in zip(rows, (None, agglomerate(captures)), strict=True):
            fit = fit_open_set(D, ye, params, strangers=S, stranger_groups=groups)

            def named(V, fit=fit, C=C):
                return decide(pairwise_distances(V, C), fit.thresholds, params)

            rate = named(X[np.isin(y, new)])[0].mean()
            hit, cand = named(Xk[probes])
            rows[name].append(
                (
                    fit.calibrated_on == "strangers",
                    fit.far.rate,
                    fit.far.low,
                    fit.far.high,
                    rate,
                    fit.far.low <= rate <= fit.far.high,
                    (hit & (cand == remap[yk[probes]])).mean(),
                    fit.stranger_people,
                )
            )
    for name, r in rows.items():
        r = np.array(r, dtype=np.float64)
        alone = f"reviewed alone {100 * r[:, 0].mean():.0f} %"
        est = f"{100 * r[:, 1].mean():.2f}% ({100 * r[:, 2].mean():.2f}-{100 * r[:, 3].mean():.2f})"
        new_cell = f"{100 * r[:, 4].mean():.2f}% ({100 * r[:, 4].std(ddof=1):.2f})"
        covered, known = 100 * r[:, 5].mean(), 100 * r[:, 6].mean()
        cells = f"{alone:>24} {est:>22} {new_cell:>15} {covered:7.0f}% {known:11.1f}%"
        print(f"{name:28} {cells}   ({r[:, 7].mean():.0f} people)")


if __name__ == "__main__":
    main()

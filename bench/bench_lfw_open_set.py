"""Strangers at scale: hundreds of enrolled people, a thousand strangers, through the public commands.

    .venv/bin/python bench/bench_lfw_open_set.py [--data ../shared/data/faces/lfw_dev]
        [--compare-src DIR]   # also run another facefleet checkout (e.g. the previous default)
        [--reviewed N]        # first review N strangers the cameras "saw" (the curation loop)

Enrols the first 3 photos (sorted by name) of each person in ``lfw_dev/people`` with
``enroll --folder --largest`` (LFW photos often show a second face; the subject is the
largest), trains with the default settings (``train``), then identifies the remaining photos
of those people and the photos in ``lfw_dev/strangers`` with the functions ``identify`` calls
(the faces are found and embedded once, then matched by the trained model and by the plain
nearest-neighbour rule at dlib's 0.6, i.e. ``identify --threshold 0.6``). The largest face of
a photo is its subject; a photo without a face counts as not named.

Prints, per decider: strangers named, known people named correctly, rejected, named as someone
else, the false-accept estimate the training reported, and images/s of each step.
``--compare-src`` runs the same script on another source tree (a checkout of an older commit)
in a subprocess and prints its trained-model column next to this one.

``--reviewed N`` plays the curation loop before training: N of the stranger photos (every
other one, sorted by name) are collected as captures (``collect``) and labelled as nobody
enrolled (``label --stranger``); the other strangers are the probes. From 499 reviewed
strangers at the default target they alone set the operating point.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def link_first(people: Path, root: Path, n: int) -> tuple[Path, list[Path]]:
    """``root/<name>/`` with the first ``n`` photos of each person; returns it and the rest."""
    rest: list[Path] = []
    for person in sorted(p for p in people.iterdir() if p.is_dir()):
        photos = sorted(person.iterdir())
        (root / person.name).mkdir(parents=True)
        for photo in photos[:n]:
            (root / person.name / photo.name).symlink_to(photo)
        rest += photos[n:]
    return root, rest


def figures(decided: dict[str, str | None], truth: dict[str, str | None]) -> dict[str, float]:
    """Rates over probe photos; ``decided`` and ``truth`` map a path to a name (None: nobody)."""
    k = {"named": 0, "rejected": 0, "wrong": 0, "known": 0, "strangers": 0, "strangers_named": 0}
    named_strangers = []
    for path, who in truth.items():
        name = decided.get(path)
        if who is None:
            k["strangers"] += 1
            k["strangers_named"] += name is not None
            if name is not None:
                named_strangers.append(f"{Path(path).stem} -> {name}")
        else:
            k["known"] += 1
            k["named" if name == who else "rejected" if name is None else "wrong"] += 1
    return {
        "strangers_named": k["strangers_named"] / k["strangers"],
        "known_named": k["named"] / k["known"],
        "known_rejected": k["rejected"] / k["known"],
        "known_wrong": k["wrong"] / k["known"],
        "strangers": k["strangers"],
        "known": k["known"],
        "strangers_named_count": k["strangers_named"],
        "named_strangers": named_strangers,
    }


def run(data: Path, workers: int, reviewed: int = 0) -> dict:
    os.environ.setdefault("FACEFLEET_NO_PROGRESS", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import numpy as np

    from facefleet.enrol import enroll, plan_folder
    from facefleet.identify import default_matcher
    from facefleet.train.pipeline import train
    from facefleet.vision.batch import analyse_files
    from facefleet.workspace import Workspace

    out: dict = {"source": str(Path(sys.modules["facefleet"].__file__).parents[1])}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ws = Workspace.init(tmp / "ws")
        gallery, rest = link_first(data / "people", tmp / "gallery", 3)
        strangers = sorted(p for p in (data / "strangers").iterdir() if p.is_file())
        seen = strangers[0::2][:reviewed]
        strangers = sorted(set(strangers) - set(seen))
        truth = {str(p): p.parent.name for p in rest} | {str(p): None for p in strangers}
        items = plan_folder(gallery)
        t0 = time.perf_counter()
        rep = enroll(ws, items, largest=True, workers=workers)
        out["enrol"] = {"photos": len(items), "accepted": len(rep.accepted)}
        out["enrol"]["images_s"] = len(items) / (time.perf_counter() - t0)
        if seen:
            out["reviewed"] = review_strangers(ws, seen, tmp / "captures")
        t0 = time.perf_counter()
        res = train(ws)
        took = time.perf_counter() - t0
        out["train"] = {
            "seconds": took,
            "faces_s": res.metrics["n_faces"] / took,
            "method": res.method,
            "metrics": res.metrics,
            # the pairs of enrolled people behind the estimate (older source trees: none)
            "lookalikes": [la.as_dict() for la in getattr(res, "lookalikes", []) if la.named],
        }
        # what identify does: analyse every photo once, then match (here with two matchers)
        engine = ws.engine()
        t0 = time.perf_counter()
        subjects: dict[str, np.ndarray] = {}
        if hasattr(ws, "vision_config"):
            vision = ws.vision_config()
        else:  # older source trees (--compare-src)
            from facefleet.vision.engine import VisionConfig

            vision = VisionConfig.from_workspace(ws)
        for a in analyse_files(list(truth), vision, workers=workers, engine=engine):
            faces = [f for f in a.faces if f.embedding is not None]
            if faces:
                face = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
                subjects[a.path] = face.embedding
        analysed = time.perf_counter() - t0
        keys = list(subjects)
        X = np.stack([subjects[k] for k in keys])
        for key, threshold in (("model", None), ("nn_0.6", 0.6)):
            t0 = time.perf_counter()
            matcher = default_matcher(ws, engine.embedder.id, threshold=threshold)
            decide = getattr(matcher, "classify", None) or matcher.match  # .match: older trees
            decided = {k: m.name for k, m in zip(keys, decide(X))}
            took = analysed + time.perf_counter() - t0
            out[key] = figures(decided, truth)
            out[key].update(images_s=len(truth) / took, matcher=matcher.description)
    return out


def review_strangers(ws, photos: list[Path], folder: Path) -> dict:
    """``collect`` the photos as a folder of captures, then ``label --stranger`` every face."""
    from facefleet.curate.collect import collect
    from facefleet.curate.labels import stranger

    folder.mkdir()
    for p in photos:
        (folder / p.name).symlink_to(p)
    t0 = time.perf_counter()
    report = collect(ws, [folder])
    store = ws.open_store()
    try:
        labelled = stranger(store, report.added)
    finally:
        store.close()
    return {"photos": len(photos), "labelled": len(labelled), "seconds": time.perf_counter() - t0}


def metric(trained: dict | None, key: str, fmt) -> str:
    return fmt(trained["metrics"][key]) if trained and key in trained["metrics"] else "-"


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "faces" / "lfw_dev")
    parser.add_argument("--src", type=Path, default=REPO, help="the facefleet source tree to measure")
    parser.add_argument("--compare-src", type=Path, help="another source tree, run in a subprocess")
    parser.add_argument("--compare-json", type=Path, help="a --json file of an earlier run to show beside")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reviewed", type=int, default=0, help="strangers reviewed before training (<= 500)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--show", type=Path, help="only print the table of a --json file written before")
    args = parser.parse_args()
    if args.show:
        saved = json.loads(args.show.read_text())
        print_table(saved["mine"], saved["other"])
        return
    sys.path.insert(0, str(args.src.resolve()))
    other = json.loads(args.compare_json.read_text())["mine"] if args.compare_json else None
    if args.compare_src:
        with tempfile.TemporaryDirectory() as tmp:
            dest = Path(tmp) / "other.json"
            cmd = [sys.executable, __file__, "--data", str(args.data), "--src", str(args.compare_src)]
            cmd += ["--workers", str(args.workers), "--reviewed", str(args.reviewed), "--json", str(dest)]
            env = {**os.environ, "PYTHONPATH": str(args.compare_src.resolve())}
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            other = json.loads(dest.read_text())["mine"]
    mine = run(args.data, args.workers, args.reviewed)
    if args.json:
        args.json.write_text(json.dumps({"mine": mine, "other": other}, indent=1))
    print_table(mine, other)


def print_table(mine: dict, other: dict | None) -> None:
    m = mine["model"]
    print(
        f"lfw_dev: {mine['enrol']['accepted']} of {mine['enrol']['photos']} enrolment photos accepted, "
        f"{m['known']} known probe photos, {m['strangers']} strangers"
    )
    if "reviewed" in mine:
        r = mine["reviewed"]
        print(f"reviewed before training: {r['labelled']} of {r['photos']} stranger photos (collect, label)")
    cols = [("nearest neighbour, 0.6", mine["nn_0.6"], None, mine)]
    if other is not None:
        cols.append((f"trained ({Path(other['source']).name})", other["model"], other["train"], other))
    cols.append((f"trained ({Path(mine['source']).name})", m, mine["train"], mine))
    rows = [
        ("strangers named", lambda c, t, r: pct(c["strangers_named"])),
        ("known named correctly", lambda c, t, r: pct(c["known_named"])),
        ("known rejected", lambda c, t, r: pct(c["known_rejected"])),
        ("known named as someone else", lambda c, t, r: pct(c["known_wrong"])),
        ("reported false-accept estimate", lambda c, t, r: pct(t["metrics"].get("far")) if t else "-"),
        (
            "  its 95 % interval",
            lambda c, t, r: (
                f"{pct(t['metrics']['far_low'])}..{pct(t['metrics']['far_high'])}"
                if t and "far_low" in t["metrics"]
                else "-"
            ),
        ),
        (
            "  stranger trials behind it",
            lambda c, t, r: metric(t, "far_trials", lambda v: str(int(v))),
        ),
        (
            "  of them reviewed strangers",
            lambda c, t, r: metric(t, "far_reviewed_share", lambda v: f"{100 * v:.0f} %"),
        ),
        (
            "  reviewed strangers, as people",
            lambda c, t, r: metric(t, "stranger_people", lambda v: str(int(v))),
        ),
        (
            "  enrolled people as strangers",
            lambda c, t, r: metric(t, "gallery_far", lambda v: pct(v)),
        ),
        ("enrol, images/s", lambda c, t, r: f"{r['enrol']['images_s']:.1f}"),
        ("train, faces/s", lambda c, t, r: f"{t['faces_s']:.1f} ({t['seconds']:.0f} s)" if t else "-"),
        ("identify, images/s", lambda c, t, r: f"{c['images_s']:.1f}"),
    ]
    width = 30
    print(f"\n{'':32}" + "".join(f"{name:>{width}}" for name, *_ in cols))
    for label, fn in rows:
        print(f"{label:32}" + "".join(f"{fn(c, t, r):>{width}}" for _, c, t, r in cols))
    pairs = mine["train"].get("lookalikes") or []
    if pairs:
        both = sum(1 for la in pairs if la["both_ways"])
        some = "; ".join(f"{la['person']} as {la['taken_for']} ({la['distance']:.2f})" for la in pairs[:4])
        print(f"\nlook-alikes behind the estimate: {len(pairs)} pairs of enrolled people ({both} both ways)")
        print(f"  e.g. {some}")
    named = m.get("named_strangers")
    if named is not None and len(named) <= 20:
        print("\nstrangers the trained model named: " + ("; ".join(named) or "none"))


if __name__ == "__main__":
    main()

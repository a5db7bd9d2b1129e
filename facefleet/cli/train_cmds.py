"""Commands of training: ``train``, ``evaluate``, ``keys init``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from facefleet.cli.core_cmds import SCHEDULER_HELP
from facefleet.train.thresholds import OpenSetParams
from facefleet.workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on the enrolled faces and publish a signed bundle")
    p.add_argument("--config", type=Path, help="version YAML (inputs, outputs, parameters)")
    p.add_argument("--name", help="human name of this version (default: the YAML's, or a timestamp)")
    p.add_argument(
        "--method",
        choices=["auto", "svm", "centroid", "nearest"],
        help="classifier (default auto: model search)",
    )
    p.add_argument("--cv-folds", type=int, help="cross-validation folds of the model search")
    p.add_argument("--n-jobs", type=int, help="cores for the model search (default 2)")
    p.add_argument(
        "--target-far",
        type=float,
        help=f"share of strangers the whole system may name (default {OpenSetParams.target_far}); "
        "turned into per-person thresholds for the gallery at hand",
    )
    p.add_argument(
        "--max-threshold", type=float, help="never name a face further than this from the person's centroid"
    )
    p.add_argument("--report", action="store_true", help="also render the training report")
    p.add_argument("--scheduler", help=SCHEDULER_HELP)
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a trained model on test photos and strangers")
    p.add_argument(
        "--model", help="version, @alias or name (default: @production, else @validated, else the newest)"
    )
    p.add_argument("--test", required=True, type=Path, help="folder with a sub-folder per person")
    p.add_argument("--unknown", type=Path, help="folder of photos of people enrolled nowhere")
    p.add_argument(
        "--no-fallback",
        action="store_true",
        help="skip the slow accurate detector on photos where none was found",
    )
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("keys", help="model signing keys")
    ksub = p.add_subparsers(dest="keys_cmd", metavar="ACTION", required=True)
    q = ksub.add_parser("init", help="create the Ed25519 signing key pair in the workspace")
    q.add_argument("--force", action="store_true", help="replace an existing key pair")
    q.set_defaults(func=cmd_keys_init)


def cmd_train(args: argparse.Namespace) -> int:
    from facefleet.train.config import load_config
    from facefleet.train.lookalikes import summary
    from facefleet.train.model import far_line
    from facefleet.train.pipeline import train

    ws = Workspace.find(args.workspace)
    cfg = load_config(
        args.config,
        workspace_train=ws.settings.train or None,
        name=args.name,
        method=args.method,
        cv_folds=args.cv_folds,
        n_jobs=args.n_jobs,
        target_far=args.target_far,
        max_threshold=args.max_threshold,
    )
    res = train(ws, cfg, report=args.report, scheduler=args.scheduler)
    if args.json:
        print(
            json.dumps(
                {
                    "run_id": res.run_id,
                    "model": res.model,
                    "version": res.version,
                    "name": res.name,
                    "method": res.method,
                    "reason": res.reason,
                    "bundle": str(res.bundle_dir),
                    "tar": str(res.tar_path),
                    "metrics": res.metrics,
                    "thresholds": res.thresholds,
                    "plots": res.plots,
                    "report": str(res.report) if res.report else None,
                    "lookalikes": [la.as_dict() for la in res.lookalikes],
                },
                indent=1,
            )
        )
        return 0
    m = res.metrics
    print(f"{res.model} version {res.version} ({res.name}): method {res.method} - {res.reason}")
    counts = f"  {int(m['n_people'])} people, {int(m['n_faces'])} faces"
    if "cv_accuracy" in m:
        print(f"{counts}; cross-validated accuracy {m['cv_accuracy']:.4f}")
    else:
        print(
            f"{counts}; no cross-validated accuracy: cross-validation needs two photos of someone "
            "and everyone has one, so the gallery (nearest face) decides with the threshold cap. "
            "Enrol a second photo of a person to measure accuracy."
        )
    print("  " + far_line(m))
    line = f"  known faces missed (leave-one-out) {100 * m['frr']:.1f} % of {int(m['genuine_trials'])}"
    if "stranger_far" in m and m.get("far_reviewed_share", 0.0) < 1.0:  # else the estimate is theirs
        line += f"; reviewed strangers named {100 * m['stranger_far']:.2f} % of {int(m['stranger_trials'])}"
    print(line + f"; thresholds {m['threshold_min']:.3f}..{m['threshold_max']:.3f}")
    for text in summary(res.lookalikes):
        print("  " + text)
    print(f"  bundle {res.bundle_dir} (+ {res.tar_path.name}), MLflow run {res.run_id}, alias @experimental")
    if res.plots:
        print(f"  plots {res.plots}")
    if res.report:
        print(f"  report notebook {res.report}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from facefleet.train.evaluate import evaluate, format_table, to_json

    ws = Workspace.find(args.workspace)
    res = evaluate(ws, args.test, unknown_dir=args.unknown, model=args.model, fallback=not args.no_fallback)
    print(f"model: {res.model.get('model')} {res.model.get('chosen')}", file=sys.stderr)
    if args.json:
        print(to_json(res))
        return 0
    m = res.model
    print(
        f"{m.get('model')} version {m.get('version')} ({m.get('name')}, {m.get('method')}); "
        f"MLflow run {res.run_id}"
    )
    print(format_table(res))
    print(f"strangers-named / known-missed plot: {res.plot}")
    if res.plots:
        print(f"plots {res.plots}")
    return 0


def cmd_keys_init(args: argparse.Namespace) -> int:
    from facefleet.registry.keys import generate_keypair

    ws = Workspace.find(args.workspace)
    priv, pub = generate_keypair(ws.keys_dir, overwrite=args.force)
    print(f"private key {priv} (mode 0600: keep it on this server)")
    print(f"public key  {pub} (devices verify bundles with it)")
    return 0

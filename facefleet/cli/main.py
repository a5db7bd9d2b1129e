"""Entry point of the ``facefleet`` console script."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from facefleet import __version__
from facefleet.errors import FacefleetError

# One module per command group; each defines register(subparsers).
COMMAND_MODULES = [
    "facefleet.cli.core_cmds",
    "facefleet.cli.models_cmds",
    "facefleet.cli.train_cmds",
    "facefleet.cli.edge_cmds",
    "facefleet.cli.fleet_cmds",
    "facefleet.cli.curate_cmds",
    "facefleet.cli.users_cmds",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facefleet",
        description="Train face-recognition models on a server and run them on edge cameras.",
    )
    parser.add_argument("--version", action="version", version=f"facefleet {__version__}")
    parser.add_argument(
        "--workspace",
        "-w",
        help="workspace folder (default: $FACEFLEET_HOME or the current folder)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except FacefleetError as exc:
        print(f"facefleet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("facefleet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

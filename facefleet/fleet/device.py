"""The device command line: ``python3 -m facefleet.fleet.device install|switch|rollback|...``.

What it runs lives below: ``facefleet.layout`` (the folders and links) and
``facefleet.registry.install`` (verify and install a bundle). ``install.sh`` calls it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from facefleet.errors import FacefleetError
from facefleet.layout import DEFAULT_KEEP, prune, rollback, state, switch
from facefleet.registry.install import install


def _load_key(path: str | None, insecure: bool) -> Any | None:
    if path:
        from facefleet.registry.keys import load_public_key

        return load_public_key(Path(path))
    if insecure:
        return None
    raise FacefleetError("--public-key FILE is required (or --checksums-only to skip the signature)")


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m facefleet.fleet.device install|switch|rollback|prune|status ...``"""
    parser = argparse.ArgumentParser(prog="python3 -m facefleet.fleet.device")
    parser.add_argument("--models-dir", required=True, help="models folder on this device")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("install", help="verify a bundle and make it current")
    p.add_argument("bundle", help="bundle folder or .tar.gz")
    p.add_argument("--public-key", help="PEM public key the bundle must be signed with")
    p.add_argument("--checksums-only", action="store_true", help="skip the signature check")
    p.add_argument("--keep", type=int, default=DEFAULT_KEEP, help="versions to keep")
    p = sub.add_parser("switch", help="make an installed version current")
    p.add_argument("model")
    p.add_argument("version", type=int)
    p = sub.add_parser("rollback", help="swap current and previous")
    p.add_argument("model")
    p = sub.add_parser("prune", help="remove old versions")
    p.add_argument("model")
    p.add_argument("--keep", type=int, default=DEFAULT_KEEP)
    p = sub.add_parser("status", help="print current/previous/versions as JSON")
    p.add_argument("model")
    args = parser.parse_args(argv)
    models_dir = Path(args.models_dir)
    try:
        if args.action == "install":
            key = _load_key(args.public_key, args.checksums_only)
            out: Any = asdict(install(models_dir, Path(args.bundle), key, keep=args.keep))
        elif args.action == "switch":
            out = {"old": switch(models_dir / args.model, args.version), "new": args.version}
        elif args.action == "rollback":
            old, new = rollback(models_dir / args.model)
            out = {"old": old, "new": new}
        elif args.action == "prune":
            out = {"removed": prune(models_dir / args.model, args.keep)}
        else:
            out = state(models_dir, args.model)
    except (FacefleetError, OSError) as exc:
        print(f"facefleet: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""CLI for the fleet: ``deploy``, ``package``, ``serve``, ``fleet status|history``,
``tokens create|revoke|list``, ``edge sync`` (the device's pull client) and ``edge notify``
(its webhook)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from facefleet.errors import FacefleetError
from facefleet.workspace import Workspace


def _inventory_path(ws: Workspace, explicit: str | None) -> Path:
    from facefleet.fleet.inventory import default_inventory_path

    if explicit:  # typed on the command line: relative to the current folder, as users expect
        return Path(explicit).expanduser().resolve()
    return default_inventory_path(ws.root, ws.settings.fleet.inventory)


def cmd_deploy(args: argparse.Namespace) -> int:
    from facefleet.fleet.catalog import resolve_bundle
    from facefleet.fleet.deploy import deploy, print_report
    from facefleet.fleet.inventory import load_inventory

    ws = Workspace.find(args.workspace)
    if args.ref and args.alias:
        raise FacefleetError("give a version/bundle or --alias, not both")
    bundle = resolve_bundle(ws, args.ref, alias=args.alias or (None if args.ref else "production"))
    inventory = load_inventory(_inventory_path(ws, args.inventory))
    report = deploy(
        ws,
        inventory,
        bundle,
        group=args.group,
        host=args.host,
        parallel=args.parallel,
        dry_run=args.dry_run,
        known_hosts=args.known_hosts,
        accept_new_host_keys=args.accept_new_host_keys,
        public_key_path=args.public_key,
    )
    print_report(report)
    return 1 if report.failed else 0


def cmd_package(args: argparse.Namespace) -> int:
    from facefleet.fleet.catalog import resolve_bundle
    from facefleet.fleet.package import make_package
    from facefleet.registry.keys import public_key_path

    ws = Workspace.find(args.workspace)
    bundle = resolve_bundle(ws, args.ref)
    out = make_package(bundle, args.public_key or public_key_path(ws.keys_dir), args.out)
    print(f"package written to {out}: copy it to the device and run 'sh install.sh --models-dir DIR'")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from facefleet.web.console import accounts
    from facefleet.web.server import serve

    ws = Workspace.find(args.workspace)
    with ws.open_store() as store:
        if not accounts.list_users(store):
            print(
                "facefleet: no console users yet: create the first admin with "
                "'facefleet users add NAME --role admin'",
                file=sys.stderr,
            )
    print(f"facefleet: console at http://{args.host}:{args.port}/ (device API under /v1)", file=sys.stderr)
    serve(ws, host=args.host, port=args.port)
    return 0


def cmd_fleet_status(args: argparse.Namespace) -> int:
    from facefleet.fleet.inventory import load_inventory
    from facefleet.fleet.status import fleet_status, status_table

    ws = Workspace.find(args.workspace)
    path = _inventory_path(ws, args.inventory)
    hosts = list(load_inventory(path).hosts) if path.is_file() else None
    rows = fleet_status(ws, hosts)
    print(status_table(rows) if rows else "no deployments or heartbeats recorded yet")
    return 0


def cmd_fleet_history(args: argparse.Namespace) -> int:
    from facefleet.fleet.status import history, history_table

    rows = history(Workspace.find(args.workspace), host=args.host, limit=args.limit)
    print(history_table(rows) if rows else "no deployments recorded yet")
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    from facefleet.fleet import records

    store = records.open_store(Workspace.find(args.workspace))
    try:
        if args.tokens_cmd == "create":
            token = records.create_token(store, args.device)
            print(token)
            print(f"token for {args.device} (shown once; only its sha256 is stored)", file=sys.stderr)
        elif args.tokens_cmd == "revoke":
            records.revoke_token(store, args.device)
            print(f"revoked the token of {args.device}")
        else:
            for t in records.list_tokens(store):
                state = f"revoked {t.revoked}" if t.revoked else "active"
                print(f"{t.name}\t{state}\tcreated {t.created}\tlast used {t.last_used or '-'}")
    finally:
        store.close()
    return 0


def cmd_edge_sync(args: argparse.Namespace) -> int:
    from facefleet.edge import sync
    from facefleet.registry.keys import load_public_key

    token = args.token or os.environ.get("FACEFLEET_TOKEN")
    if not token:
        raise FacefleetError("a device token is required: --token T or $FACEFLEET_TOKEN")
    key_path, models_dir = args.public_key, args.models_dir
    if key_path is None or models_dir is None:
        try:
            ws = Workspace.find(args.workspace)
        except FacefleetError:
            raise FacefleetError(
                "pass --public-key FILE and --models-dir DIR (or run inside a workspace)"
            ) from None
        key_path = key_path or ws.public_key_path
        models_dir = models_dir or ws.models_dir
    kwargs = dict(
        token=token,
        public_key=load_public_key(Path(key_path)),
        models_dir=Path(models_dir),
        model=args.model,
        alias=args.alias,
        keep=args.keep,
        device_id=args.device_id,
        fps=args.fps if args.fps is not None else sync.read_fps(args.fps_file),
        snapshot=args.snapshot,
    )
    if args.every and args.every > 0:
        sync.sync_loop(args.server, every=args.every, rounds=args.rounds, **kwargs)
        return 0
    result = sync.sync_once(args.server, **kwargs)
    print(f"{args.model}@{args.alias}: {result.status} (v{result.version})")
    return 0


def cmd_edge_notify(args: argparse.Namespace) -> int:
    from facefleet.edge import notify

    events = args.events
    if events is None:
        try:
            events = Workspace.find(args.workspace).output_dir / "events.jsonl"
        except FacefleetError:
            events = Path.cwd() / "output" / "events.jsonl"  # where recognize writes outside one
    kinds = notify.KINDS if args.kind == "all" else (args.kind,)
    receiver = notify.Receiver(
        args.url, token=args.token or os.environ.get("FACEFLEET_WEBHOOK_TOKEN"), with_crop=args.with_crop
    )
    if not args.once:
        print(f"following {events}: {', '.join(kinds)} events to {args.url}", file=sys.stderr)
    stats = notify.follow(
        Path(events),
        receiver,
        kinds=kinds,
        state=args.state,
        from_start=args.from_start,
        once=args.once,
        max_seconds=args.max_seconds,
    )
    print(
        f"{stats.sent} event(s) sent, {len(stats.skipped)} refused by the receiver, "
        f"{stats.filtered} of other kinds, {stats.bad_lines} unreadable line(s), {stats.retries} retries"
    )
    for why in stats.skipped:
        print(f"  refused: {why}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "deploy",
        help="push a model bundle to the devices over SSH",
        description="Verify a bundle, push it to every device of the inventory "
        "over SSH, switch atomically, restart, health-check; roll back failures.",
    )
    p.add_argument("ref", nargs="?", help="version (3, v3), name, @alias, or a bundle path")
    p.add_argument("--alias", help="deploy the version holding this alias (default production)")
    p.add_argument("--group", help="only this inventory group")
    p.add_argument("--host", help="only this host")
    p.add_argument("--parallel", "--concurrency", type=int, default=4, help="hosts at a time (default 4)")
    p.add_argument("--dry-run", action="store_true", help="connect and report, change nothing")
    p.add_argument("--inventory", help="Ansible YAML inventory (default inventory.yaml)")
    p.add_argument("--known-hosts", help="known_hosts file (default ~/.ssh/known_hosts)")
    p.add_argument(
        "--accept-new-host-keys",
        action="store_true",
        help="record host keys of hosts not yet in known_hosts (never a changed one)",
    )
    p.add_argument("--public-key", type=Path, help="key bundles must verify with")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("package", help="build an offline installer for air-gapped devices")
    p.add_argument("ref", help="version (3, v3), name, @alias, or a bundle path")
    p.add_argument("--out", required=True, type=Path, help="new folder for the package")
    p.add_argument("--public-key", type=Path, help="default keys/signing_key.pub.pem")
    p.set_defaults(func=cmd_package)

    p = sub.add_parser("serve", help="run the model server (device API under /v1) and the web console (/)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.set_defaults(func=cmd_serve)

    fleet = sub.add_parser("fleet", help="what runs where: status, history")
    fsub = fleet.add_subparsers(dest="fleet_cmd", required=True, metavar="ACTION")
    p = fsub.add_parser("status", help="version per device, since when, last heartbeat, FPS")
    p.add_argument("--inventory", help="list inventory hosts with no record too")
    p.set_defaults(func=cmd_fleet_status)
    p = fsub.add_parser("history", help="past deployments, newest first")
    p.add_argument("--host", help="only this host")
    p.add_argument("--limit", type=int, default=50, help="at most N deployments (default 50)")
    p.set_defaults(func=cmd_fleet_history)

    tokens = sub.add_parser("tokens", help="device tokens for the model server")
    tsub = tokens.add_subparsers(dest="tokens_cmd", required=True, metavar="ACTION")
    p = tsub.add_parser("create", help="create a token for a device (printed once)")
    p.add_argument("device", help="device name")
    p.set_defaults(func=cmd_tokens)
    p = tsub.add_parser("revoke", help="revoke a device's token")
    p.add_argument("device", help="device name")
    p.set_defaults(func=cmd_tokens)
    p = tsub.add_parser("list", help="list tokens (names and dates, never the tokens)")
    p.set_defaults(func=cmd_tokens)

    edge = sub.add_parser("edge", help="device-side commands")
    esub = edge.add_subparsers(dest="edge_cmd", required=True, metavar="ACTION")
    p = esub.add_parser("sync", help="pull the aliased bundle from the model server")
    p.add_argument("--server", required=True, help="model server URL, e.g. http://srv:8765")
    p.add_argument("--alias", default="production", help="alias to follow (default production)")
    p.add_argument("--model", default="face_model", help="model name (default face_model)")
    p.add_argument("--every", type=float, default=0, help="repeat every N seconds (e.g. 300); 0 = once")
    p.add_argument("--rounds", type=int, help="with --every: stop after N rounds")
    p.add_argument("--token", help="device token (default $FACEFLEET_TOKEN)")
    p.add_argument("--public-key", type=Path, help="PEM key bundles must be signed with")
    p.add_argument("--models-dir", type=Path, help="models folder on this device")
    p.add_argument("--keep", type=int, default=3, help="versions kept on the device (default 3)")
    p.add_argument("--device-id", help="name in heartbeats (default: the token's device)")
    p.add_argument("--fps", type=float, help="FPS to report")
    p.add_argument("--fps-file", type=Path, help="benchmark JSON with an 'fps' key to report")
    p.add_argument("--snapshot", type=Path, help="a small JPEG (<= 256 KB) to send with the heartbeat")
    p.set_defaults(func=cmd_edge_sync)
    p = esub.add_parser(
        "notify",
        help="post each recognition event to a webhook URL as recognize records it",
        description="Follow events.jsonl (as tail -F does) and POST each event as JSON to URL, "
        "at least once: where it stopped is kept in EVENTS.notify.json, and an event is retried "
        "until the receiver takes it (a 4xx other than 408/429 skips it).",
    )
    p.add_argument("--url", required=True, help="the webhook, e.g. http://homeassistant:8123/api/webhook/ID")
    p.add_argument(
        "--events", type=Path, help="events.jsonl (default: in the workspace's output/, or ./output/)"
    )
    p.add_argument(
        "--kind", choices=["all", "named", "unknown"], default="all", help="which events (default all)"
    )
    p.add_argument("--token", help="bearer token for the receiver (default $FACEFLEET_WEBHOOK_TOKEN)")
    p.add_argument("--with-crop", action="store_true", help="add the face crop as base64 JPEG (crop_jpeg)")
    p.add_argument("--state", type=Path, help="where it keeps its place (default EVENTS.notify.json)")
    p.add_argument("--from-start", action="store_true", help="on a first run, send the events already there")
    p.add_argument("--once", action="store_true", help="send what is there, then exit (for cron)")
    p.add_argument("--max-seconds", type=float, help="stop following after this long")
    p.set_defaults(func=cmd_edge_notify)

"""``facefleet collect | curate | montage | clusters | label | validate | autotrain |
schedule``: the curation loop's commands, thin wrappers over ``facefleet.curate``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from facefleet.cli.core_cmds import SCHEDULER_HELP
from facefleet.errors import FacefleetError
from facefleet.workspace import Workspace

if TYPE_CHECKING:
    from facefleet.curate.clusters import LooksLike


def _store_and_embedder(args):
    from facefleet.train.pipeline import current_embedder_id

    ws = Workspace.find(args.workspace)
    return ws, ws.open_store(), current_embedder_id(ws)


def _collect(args: argparse.Namespace) -> int:
    from facefleet.curate.collect import collect, collect_remote

    ws = Workspace.find(args.workspace)
    if args.host:
        from facefleet.fleet.inventory import default_inventory_path

        inv = args.inventory or default_inventory_path(ws.root, ws.settings.fleet.inventory)
        report = collect_remote(
            ws,
            inv,
            args.host,
            known_hosts=args.known_hosts,
            accept_new_host_keys=args.accept_new_host_keys,
            scheduler=args.scheduler,
        )
    elif not args.paths:
        raise FacefleetError("give PATH(s) to collect, or --host H with an inventory")
    else:
        report = collect(ws, args.paths, device=args.device, scheduler=args.scheduler)
    print(report.summary())
    return 0


def _curate(args: argparse.Namespace) -> int:
    from facefleet.curate.candidates import Filters, format_candidates, list_candidates

    ws, store, emb = _store_and_embedder(args)
    try:
        if args.facelist:
            from facefleet.fileio import atomic_write_text
            from facefleet.fleet.facelist import facelist_csv

            faces = [f for s in ("selected", "in_use") for f in store.faces(status=s) if f.person_name]
            atomic_write_text(args.facelist, facelist_csv(sorted(faces, key=lambda f: f.id)))
            print(f"{len(faces)} curated faces written to {args.facelist}")
            return 0
        filters = Filters(
            min_proba=args.min_proba,
            max_distance=args.max_distance,
            usable=args.usable,
            since=args.since,
            person=args.person,
            status=args.status,
        )
        cands = list_candidates(
            store, emb, filters, quality_cfg=ws.settings.quality, dedup_distance=args.dedup
        )
    finally:
        store.close()
    if args.limit:
        cands = cands[: args.limit]
    if args.json:
        print(json.dumps([c.as_dict() for c in cands], indent=1, default=str))
    else:
        print(format_candidates(cands) if cands else "no candidates pass these filters")
    return 0


def _montage(args: argparse.Namespace) -> int:
    from facefleet.curate.montage import montages

    ws, store, emb = _store_and_embedder(args)
    try:
        paths = montages(store, emb, args.out, person=args.person, cluster=args.cluster, status=args.status)
    finally:
        store.close()
    for p in paths:
        print(p)
    return 0


def _look_text(h: LooksLike) -> str:
    who = f"looks like {h.person}" if h.person else f"may be cluster {h.cluster}"
    return f"{who} ({h.distance:.2f})"


def _clusters(args: argparse.Namespace) -> int:
    from facefleet.curate import clusters as cl

    ws, store, emb = _store_and_embedder(args)
    try:
        if args.action == "list":
            placed = cl.update_clusters(store, emb, args.distance)
            found = cl.clusters(store, emb, include_closed=args.all)
            looks = cl.looks_like(store, emb, [c.id for c in found])  # closed ones get none
            if args.json:
                out = [c.as_dict() | {"looks_like": [h.as_dict() for h in looks[c.id]]} for c in found]
                print(json.dumps(out, indent=1))
                return 0
            if placed:
                print(f"{len(placed)} new capture(s) clustered")
            print(f"{'cluster':>7s} {'state':9s} {'faces':>5s} {'spread':>6s}  devices / seen  [looks like]")
            for c in found:
                hint = "; ".join(_look_text(h) for h in looks[c.id])
                print(
                    f"{c.id:7d} {c.state:9s} {len(c.faces):5d} {c.spread:6.3f}  "
                    f"{','.join(c.devices) or '-'}  {c.first_seen or ''} .. {c.last_seen or ''}"
                    + (f"  [{hint}]" if hint else "")
                )
            return 0
        if args.cluster is None:
            raise FacefleetError(f"clusters {args.action} needs a cluster number")
        if args.action == "show":
            info = cl.cluster(store, emb, args.cluster)
            hints = cl.looks_like(store, emb, [info.id])[info.id]  # none once it is closed
            if args.json:
                print(json.dumps(info.as_dict() | {"looks_like": [h.as_dict() for h in hints]}, indent=1))
            else:
                print(
                    f"cluster {info.id} ({info.state}{', ' + info.person if info.person else ''}):"
                    f" {len(info.faces)} open of {info.all_members} faces, spread "
                    f"{info.spread:.3f}"
                )
                for h in hints:
                    print(f"  {_look_text(h)}: face {h.face_id}")
                for f in info.faces:
                    m = f.meta or {}
                    print(
                        f"  {f.id:6d} {m.get('device') or '-'} {m.get('event_time') or f.created}"
                        f"  {f.image_path}"
                    )
            return 0
        if args.action == "label":
            if not args.name:
                raise FacefleetError("clusters label N NAME: the name is missing")
            ids = cl.label_cluster(store, emb, args.cluster, args.name, exclude=args.exclude)
            print(f"cluster {args.cluster}: {len(ids)} face(s) labelled {args.name!r} (selected)")
            return 0
        ids = cl.reject_cluster(store, emb, args.cluster, as_stranger=args.stranger)
        print(
            f"cluster {args.cluster}: {len(ids)} face(s) "
            + ("kept as strangers" if args.stranger else "discarded (revoked)")
        )
        if args.stranger:
            from facefleet.curate.labels import reviewed_strangers_note

            print(reviewed_strangers_note(ws, store, emb))
        return 0
    finally:
        store.close()


def _label(args: argparse.Namespace) -> int:
    from facefleet.curate import labels

    items = list(args.items)
    name = None
    if not (args.discard or args.remove or args.stranger or args.not_name):
        if len(items) < 2:
            raise FacefleetError("usage: facefleet label ITEM... NAME")
        name = items.pop()
    try:
        ids = [int(i) for i in items]
    except ValueError:
        raise FacefleetError(f"face ids are numbers (as on the montage tiles), got {items}") from None
    ws, store, emb = _store_and_embedder(args)
    note = None
    try:
        if args.not_name:
            done = labels.label_not(store, ids, args.not_name)
            what = f"marked as not {args.not_name!r}"
        elif args.discard:
            done, what = labels.discard(store, ids), "discarded (revoked)"
        elif args.remove:
            done, what = labels.remove(store, ids), "removed"
        elif args.stranger:
            done, what = labels.stranger(store, ids), "kept as strangers (selected)"
            note = labels.reviewed_strangers_note(ws, store, emb)
        else:
            done, what = labels.label(store, ids, name), f"labelled {name!r} (selected)"
    finally:
        store.close()
    print(f"{len(done)} face(s) {what}")
    if note:
        print(note)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from facefleet.curate.validate import format_report, validate

    ws = Workspace.find(args.workspace)
    report = validate(
        ws,
        args.candidate,
        against=args.against,
        test_dir=args.test,
        unknown_dir=args.unknown,
        replay=args.replay or not args.test,
        since=args.since,
        promote=args.promote,
    )
    if args.json:
        print(json.dumps(report.as_dict(), indent=1, default=float))
    else:
        print(format_report(report))
    return 0 if report.passed else 1


def _autotrain(args: argparse.Namespace) -> int:
    from facefleet.curate.autotrain import autotrain

    ws = Workspace.find(args.workspace)
    result = autotrain(ws, force=args.force, wait=args.wait, echo=print)
    return 1 if result.state == "needs-review" else 0


def _schedule(args: argparse.Namespace) -> int:
    from facefleet.curate.schedule import install

    ws = Workspace.find(args.workspace)
    done = install(ws, args.at, crontab=args.crontab, folder=args.dir)
    for p in done.files:
        print(f"wrote {p}")
    print(done.instructions)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("collect", help="bring device events and unknown captures in as candidates")
    p.add_argument(
        "paths",
        nargs="*",
        type=Path,
        help="device output folder, events.jsonl, facelist.csv, or a folder of crops",
    )
    p.add_argument("--host", help="collect from this inventory host over SSH")
    p.add_argument("--inventory", type=Path, help="default: the workspace's inventory.yaml")
    p.add_argument("--device", help="device name recorded for local paths")
    p.add_argument("--known-hosts", type=Path, help="default ~/.ssh/known_hosts")
    p.add_argument(
        "--accept-new-host-keys",
        action="store_true",
        help="record the host key of a device not yet in known_hosts",
    )
    p.add_argument("--scheduler", help=SCHEDULER_HELP)
    p.set_defaults(func=_collect)

    p = sub.add_parser("curate", help="list candidate faces: filtered, de-duplicated, ranked")
    p.add_argument(
        "--min-proba", type=float, default=0.99, help="for faces a device named (default 0.99, SentinelCam's)"
    )
    p.add_argument(
        "--max-distance",
        type=float,
        default=0.65,
        help="for faces a device named (default 0.65, SentinelCam's)",
    )
    p.add_argument("--usable", action="store_true", help="only faces of usable quality")
    p.add_argument("--since", help="only faces seen on or after this date (YYYY-MM-DD)")
    p.add_argument("--person", help="only faces the device named or ranked as NAME")
    p.add_argument(
        "--status",
        default="candidate",
        choices=("candidate", "selected", "in_use", "revoked"),
        help="faces of this status (default candidate)",
    )
    p.add_argument(
        "--dedup",
        type=float,
        default=0.15,
        help="embedding distance under which two faces count as one (default 0.15)",
    )
    p.add_argument("--limit", type=int, default=0, help="show at most N faces (default 0: all)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.add_argument(
        "--facelist",
        type=Path,
        metavar="FILE",
        help="instead: write the curated faces (selected + in_use) as facelist.csv",
    )
    p.set_defaults(func=_curate)

    p = sub.add_parser("montage", help="contact sheets (PNG) of faces, tiles numbered by face id")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--person", help="faces of this person (id or name)")
    g.add_argument("--cluster", type=int, help="faces of this cluster of unknowns")
    p.add_argument(
        "--status", choices=("candidate", "selected", "in_use", "revoked"), help="only faces of this status"
    )
    p.add_argument("--out", type=Path, required=True, help="PNG file (one per page when several)")
    p.set_defaults(func=_montage)

    p = sub.add_parser("clusters", help="clusters of unknown captures: list | show | label | reject")
    p.add_argument("action", choices=("list", "show", "label", "reject"), help="what to do")
    p.add_argument("cluster", nargs="?", type=int, help="cluster number (show, label, reject)")
    p.add_argument("name", nargs="?", help="label: the person's name")
    p.add_argument("--distance", type=float, default=0.5, help="clustering cut (default 0.5)")
    p.add_argument("--exclude", type=int, nargs="+", default=[], help="face ids not to label")
    p.add_argument(
        "--stranger",
        action="store_true",
        help="reject: keep the faces as reviewed strangers instead of discarding",
    )
    p.add_argument("--all", action="store_true", help="list: labelled and rejected ones too")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=_clusters)

    p = sub.add_parser("label", help="label faces: ITEM... NAME | --not NAME | --discard")
    p.add_argument("items", nargs="+", help="face ids (the montage tile numbers), then NAME")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--not", dest="not_name", metavar="NAME", help="these faces are not NAME")
    g.add_argument("--discard", action="store_true", help="revoke: never train on them")
    g.add_argument("--remove", action="store_true", help="delete them from the store")
    g.add_argument("--stranger", action="store_true", help="nobody enrolled (impostor evidence)")
    p.set_defaults(func=_label)

    p = sub.add_parser("validate", help="a candidate version against production; --promote")
    p.add_argument("candidate", help="version: 3, v3, @experimental or a name")
    p.add_argument("--against", default="production", help="alias or version (default production)")
    p.add_argument("--test", type=Path, help="held-out photos, one folder per person")
    p.add_argument("--unknown", type=Path, help="held-out photos of strangers")
    p.add_argument(
        "--replay", action="store_true", help="also replay collected faces (default when no --test)"
    )
    p.add_argument("--since", help="replay faces seen since this date")
    p.add_argument(
        "--promote",
        action="store_true",
        help="on a pass: move @validated (and @production when validate.promote_production is true)",
    )
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=_validate)

    p = sub.add_parser("autotrain", help="train, validate and promote when faces were labelled")
    p.add_argument("--force", action="store_true", help="train even with nothing new")
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        help="seconds to wait for a running autotrain (default: exit at once)",
    )
    p.set_defaults(func=_autotrain)

    p = sub.add_parser("schedule", help="install a nightly autotrain (systemd timer or crontab)")
    p.add_argument("action", choices=("install",), help="install: write the timer (or crontab line)")
    p.add_argument("--at", default="03:00", help="time of day, HH:MM (default 03:00)")
    p.add_argument("--crontab", action="store_true", help="a crontab line instead of systemd")
    p.add_argument("--dir", type=Path, help="where to write (default ~/.config/systemd/user)")
    p.set_defaults(func=_schedule)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(1)

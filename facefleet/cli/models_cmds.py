"""``facefleet models ...``, ``ui``, ``export ...`` and ``import ...``: versions, aliases,
the MLflow UI and SentinelCam / edge-script legacy formats.

Thin wrappers over facefleet.registry.{versions,tracking,legacy}.
"""

from __future__ import annotations

import argparse
from typing import Any

from facefleet.texttable import text_table
from facefleet.workspace import Workspace


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(rows: list[list[str]], header: list[str]) -> str:
    return text_table([header, *rows], rule=True)


# -- models ------------------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    from facefleet.registry import versions

    infos = versions.list_versions(Workspace.find(args.workspace))
    rows = [
        [
            f"v{i.version}",
            i.name or "-",
            " ".join(f"@{a}" for a in i.aliases) or "-",
            _fmt(i.accuracy),
            i.created,
            (i.run_id or "-")[:12],
        ]
        for i in infos
    ]
    print(_table(rows, ["version", "name", "aliases", "accuracy", "created", "run"]))
    return 0


def _show(args: argparse.Namespace) -> int:
    from facefleet.registry import versions
    from facefleet.train import lookalikes

    ws = Workspace.find(args.workspace)
    info = versions.resolve_version(ws, args.ref)
    print(f"{info.model} {info.label}")
    print(f"  aliases:  {' '.join('@' + a for a in info.aliases) or '-'}")
    print(f"  created:  {info.created}")
    print(f"  run:      {info.run_id or '-'}")
    print(f"  source:   {info.source}")
    if info.description:
        print(f"  notes:    {info.description}")
    if "far" in info.metrics:
        from facefleet.train.model import far_line

        print(f"  open set: {far_line(info.metrics)}")
    found = lookalikes.of_version(ws, info)
    if found:
        with ws.open_store() as store:
            found = lookalikes.mark_accepted(found, lookalikes.accepted_pairs(store))
        print("  look-alikes (enrolled people played as strangers, the closest pairs):")
        for la in found:
            print(f"    {lookalikes.describe(la)}")
    for title, mapping in (("tags", info.tags), ("params", info.params), ("metrics", info.metrics)):
        if mapping:
            print(f"  {title}:")
            for key in sorted(mapping):
                print(f"    {key}: {_fmt(mapping[key])}")
    moves = [e for e in versions.audit_log(ws) if info.version in (e["to_version"], e.get("from_version"))]
    if moves:
        print("  history:")
        for e in moves:
            print(f"    {_move_line(e)}")
    return 0


def _move_line(e: dict[str, Any]) -> str:
    prev = f"v{e['from_version']}" if e.get("from_version") is not None else "-"
    why = f"  ({e['why']})" if e.get("why") else ""
    return f"{e['ts']}  {e['user']}  {e['action']} @{e['alias']}: {prev} -> v{e['to_version']}{why}"


def _promote(args: argparse.Namespace) -> int:
    from facefleet.registry import versions

    ws = Workspace.find(args.workspace)
    entry = versions.promote(ws, args.ref, args.to, why=args.why or "")
    if entry is None:
        print(f"@{args.to.lstrip('@')} already points at {args.ref}: nothing to do")
    else:
        print(_move_line(entry))
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from facefleet.registry import versions

    entry = versions.rollback(Workspace.find(args.workspace), args.alias, why=args.why or "")
    print(_move_line(entry))
    return 0


def _history(args: argparse.Namespace) -> int:
    from facefleet.registry import versions

    alias = versions.check_alias(args.alias) if args.alias else None
    entries = versions.audit_log(Workspace.find(args.workspace), alias)
    if not entries:
        print("no alias moves recorded yet")
    for e in entries:
        print(_move_line(e))
    return 0


def _diff(args: argparse.Namespace) -> int:
    from facefleet.registry import versions

    d = versions.diff(Workspace.find(args.workspace), args.a, args.b)
    header = ["", d.a.label, d.b.label, ""]
    for title, rows in (("params", d.params), ("metrics", d.metrics), ("thresholds", d.thresholds)):
        if not rows:
            continue
        print(f"{title}:")
        body = [[k, _fmt(va), _fmt(vb), "*" if changed else ""] for k, va, vb, changed in rows]
        print(_table(body, header))
        print()
    if d.labels_removed or d.labels_added:
        print("labels:")
        for name in d.labels_removed:
            print(f"  - {name}")
        for name in d.labels_added:
            print(f"  + {name}")
    else:
        print("labels: unchanged (or no bundle manifest logged)")
    return 0


def _export_versions(args: argparse.Namespace) -> int:
    from facefleet.registry import versions

    path = versions.write_versions_yaml(Workspace.find(args.workspace), args.output)
    print(f"wrote {path}")
    return 0


# -- ui ----------------------------------------------------------------------------------------


def _ui(args: argparse.Namespace) -> int:
    from facefleet.registry import tracking

    ws = Workspace.find(args.workspace)
    tracking.ensure_experiment(ws)
    print(f"MLflow UI on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    return tracking.run_ui(ws, host=args.host, port=args.port)


# -- legacy export / import ----------------------------------------------------------------------


def _export_facedata(args: argparse.Namespace) -> int:
    from facefleet.registry import legacy

    n = legacy.export_facedata(Workspace.find(args.workspace), args.output, statuses=args.status)
    print(f"wrote {n} faces to {args.output}")
    return 0


def _export_baselines(args: argparse.Namespace) -> int:
    from facefleet.registry import legacy

    n = legacy.export_baselines(Workspace.find(args.workspace), args.output, bundle=args.bundle)
    print(f"wrote {n} baselines to {args.output}")
    return 0


def _export_facemodel(args: argparse.Namespace) -> int:
    from facefleet.registry import legacy

    n = legacy.export_facemodel(Workspace.find(args.workspace), args.output)
    print(f"wrote a classifier of {n} people to {args.output}")
    return 0


def _export_face_database(args: argparse.Namespace) -> int:
    from facefleet.registry import legacy

    n = legacy.export_face_database(Workspace.find(args.workspace), args.output)
    print(f"wrote {n} people to {args.output}")
    return 0


def _import_facelist(args: argparse.Namespace) -> int:
    from facefleet.registry import legacy

    report = legacy.import_facelist(
        Workspace.find(args.workspace), args.csv, images_dir=args.images, embed=not args.no_embed
    )
    print(report.summary())
    return 0


def _import_facedata(args: argparse.Namespace) -> int:
    from facefleet.registry import legacy

    report = legacy.import_facedata(Workspace.find(args.workspace), args.hdf5)
    print(report.summary())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="model versions and aliases (MLflow registry)")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    p = msub.add_parser("list", help="every version, its aliases and accuracy")
    p.set_defaults(func=_list)
    p = msub.add_parser("show", help="one version: params, metrics, alias history")
    p.add_argument("ref", help="version number, @alias or human name")
    p.set_defaults(func=_show)
    p = msub.add_parser("promote", help="point an alias at a version (logged)")
    p.add_argument("ref", help="version number, @alias or human name")
    p.add_argument("--to", required=True, help="production | validated | experimental")
    p.add_argument("--why", help="reason, kept in the audit log")
    p.set_defaults(func=_promote)
    p = msub.add_parser("rollback", help="move an alias back to its previous holder")
    p.add_argument("alias", help="production | validated | experimental")
    p.add_argument("--why", help="reason, kept in the audit log")
    p.set_defaults(func=_rollback)
    p = msub.add_parser("diff", help="params, metrics, labels, thresholds of two versions")
    p.add_argument("a", help="version number, @alias or human name")
    p.add_argument("b", help="version number, @alias or human name")
    p.set_defaults(func=_diff)
    p = msub.add_parser("history", help="the audit log of alias moves")
    p.add_argument("alias", nargs="?", help="only this alias (default: all)")
    p.set_defaults(func=_history)
    p = msub.add_parser("export-versions", help="write versions.yaml")
    p.add_argument("-o", "--output", help="path (default: <workspace>/versions.yaml)")
    p.set_defaults(func=_export_versions)

    p = sub.add_parser("ui", help="the MLflow UI on this workspace's runs and models")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.set_defaults(func=_ui)

    export = sub.add_parser("export", help="write SentinelCam / edge-script legacy files")
    esub = export.add_subparsers(dest="export_command", metavar="FORMAT", required=True)
    p = esub.add_parser("facedata", help="SentinelCam facedata.hdf5 (faces + embeddings)")
    p.add_argument("output", help="facedata.hdf5 to write")
    p.add_argument("--status", nargs="+", default=["in_use"], help="face statuses to export")
    p.set_defaults(func=_export_facedata)
    p = esub.add_parser("baselines", help="SentinelCam baselines.hdf5 (centroids + thresholds)")
    p.add_argument("output", help="baselines.hdf5 to write")
    p.add_argument("--bundle", help="bundle dir/.tar.gz (default: centroids of the store)")
    p.set_defaults(func=_export_baselines)
    p = esub.add_parser("facemodel", help="SentinelCam facemodel.pickle (SVM + LabelEncoder)")
    p.add_argument("output", help="facemodel.pickle to write")
    p.set_defaults(func=_export_facemodel)
    p = esub.add_parser("face-database", help="edge scripts' face_database.json")
    p.add_argument("output", help="face_database.json to write")
    p.set_defaults(func=_export_face_database)

    imp = sub.add_parser("import", help="read SentinelCam legacy files into the store")
    isub = imp.add_subparsers(dest="import_command", metavar="FORMAT", required=True)
    p = isub.add_parser("facelist", help="SentinelCam facelist.csv as candidate faces")
    p.add_argument("csv", help="facelist.csv to read")
    p.add_argument("--images", help="folder of the event frames named in the CSV")
    p.add_argument("--no-embed", action="store_true", help="record faces without embeddings")
    p.set_defaults(func=_import_facelist)
    p = isub.add_parser("facedata", help="SentinelCam facedata.hdf5: people, faces, embeddings")
    p.add_argument("hdf5", help="facedata.hdf5 to read")
    p.set_defaults(func=_import_facedata)

"""Commands of the foundation: init, enroll, people, identify, export-database, demo."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from facefleet.errors import FacefleetError
from facefleet.workspace import Workspace

SCHEDULER_HELP = "Dask scheduler tcp://HOST:8786 for the heavy work (default: compute.scheduler, else local)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="create a workspace (config, store, folders)")
    p.add_argument("dir", nargs="?", default=".", help="workspace folder (default: here)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("enroll", aliases=["enrol"], help="enrol people from a few photos each")
    p.add_argument("name", nargs="?", help="the person's name (with IMG...)")
    p.add_argument("images", nargs="*", help="photos of that person")
    p.add_argument("--folder", help="a folder with one sub-folder of photos per person")
    p.add_argument("--flat", help="a folder of files named <name>_<n>.jpg")
    p.add_argument("--largest", action="store_true", help="take the largest face of a group photo")
    p.add_argument("--workers", type=int, help="processes (default: one per core)")
    p.add_argument("--scheduler", help=SCHEDULER_HELP)
    p.add_argument("--json", action="store_true", help="print the outcome of every photo as JSON")
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser(
        "people", help="list, show, rename, merge, unmerge or remove enrolled people (default: list)"
    )
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=cmd_people_list)
    psub = p.add_subparsers(dest="people_cmd", metavar="ACTION")
    q = psub.add_parser("list", help="everyone enrolled, with photo counts")
    q.add_argument("--json", action="store_true", help="print as JSON")
    q.set_defaults(func=cmd_people_list)
    q = psub.add_parser("show", help="one person's faces")
    q.add_argument("person", help="id or name")
    q.set_defaults(func=cmd_people_show)
    q = psub.add_parser("rename", help="give a person a new name")
    q.add_argument("person", help="id or name")
    q.add_argument("new_name", help="the new name")
    q.set_defaults(func=cmd_people_rename)
    q = psub.add_parser(
        "merge", help="one person enrolled under two names: move PERSON's faces to INTO, PERSON goes"
    )
    q.add_argument("person", help="id or name of the one that goes")
    q.add_argument("into", help="id or name of the one that stays")
    q.set_defaults(func=cmd_people_merge)
    q = psub.add_parser(
        "accept-alike", help="a look-alike pair is two people (compared): mark it so in look-alike lists"
    )
    q.add_argument("person", help="id or name")
    q.add_argument("other", help="id or name")
    q.add_argument("--undo", action="store_true", help="take the mark back")
    q.set_defaults(func=cmd_people_accept_alike)
    q = psub.add_parser("merges", help="the merges made, newest first, and who has the faces now")
    q.add_argument("--json", action="store_true", help="print as JSON")
    q.set_defaults(func=cmd_people_merges)
    q = psub.add_parser("unmerge", help="undo a merge: the person is back with the faces it moved")
    q.add_argument("merge", help="the name of the person that went (their newest merge), or a merge number")
    q.set_defaults(func=cmd_people_unmerge)
    q = psub.add_parser("remove", help="delete a person and their faces")
    q.add_argument("person", help="id or name")
    q.set_defaults(func=cmd_people_remove)
    q = psub.add_parser("revoke", help="revoke a person's faces (kept, never trained on again)")
    q.add_argument("person", help="id or name")
    q.set_defaults(func=cmd_people_revoke)
    q = psub.add_parser("remove-photo", help="delete one enrolled face (see 'people show')")
    q.add_argument("face_id", type=int, help="the face id 'people show' lists")
    q.set_defaults(func=cmd_people_remove_photo)

    p = sub.add_parser("identify", help="name every face in images or folders")
    p.add_argument("paths", nargs="+", help="images or folders of images")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the results as JSON")
    fmt.add_argument("--csv", action="store_true", help="print the results as CSV")
    p.add_argument(
        "--model",
        help="model version, @alias or name (default: @production, else @validated, else the newest)",
    )
    p.add_argument("--threshold", type=float, help="use the gallery with this distance threshold")
    p.add_argument("--workers", type=int, help="processes (default: one per core)")
    p.set_defaults(func=cmd_identify)

    p = sub.add_parser("export-database", help="write face_database.json for the old edge scripts")
    p.add_argument("--out", default="face_database.json", help="output file (default face_database.json)")
    p.set_defaults(func=cmd_export_database)

    p = sub.add_parser("demo", help="enrol a sample set in a fresh workspace and identify a test set")
    p.add_argument("--data", help="folder with five_celebrity/{train,val} (default: ../shared/data/faces)")
    p.add_argument("--dir", help="workspace to create (default: a new temporary folder)")
    p.set_defaults(func=cmd_demo)


def cmd_init(args: argparse.Namespace) -> int:
    ws = Workspace.init(args.dir)
    print(f"workspace ready: {ws.root}")
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    from facefleet.enrol import enroll, plan_flat, plan_folder

    ws = Workspace.find(args.workspace)
    if args.folder:
        items = plan_folder(args.folder)
    elif args.flat:
        items = plan_flat(args.flat)
    elif args.name is not None and args.images:
        items = [(args.name, Path(img)) for img in args.images]
    else:
        raise FacefleetError("give NAME IMG [IMG...], --folder DIR or --flat DIR")
    report = enroll(ws, items, largest=args.largest, workers=args.workers, scheduler=args.scheduler)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for o in report.outcomes:
            mark = "ok " if o.accepted else "REJECTED"
            extra = " (cached)" if o.cached else ""
            print(f"{mark:8} {o.person:20} {o.path}{extra}" + (f": {o.reason}" if o.reason else ""))
        for name, person_id in report.person_ids().items():
            print(f"{person_id}\t{name}")
        print(f"{len(report.accepted)} accepted, {len(report.rejected)} rejected", file=sys.stderr)
    return 0 if report.accepted else 1


def cmd_people_list(args: argparse.Namespace) -> int:
    ws = Workspace.find(args.workspace)
    with ws.open_store() as store:
        counts = store.face_counts()
        rows = [
            {
                "id": p.id,
                "name": p.name,
                "photos": counts.get(p.id, {}).get("in_use", 0),
                "created": p.created,
            }
            for p in store.people()
        ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'id':10} {'name':24} {'photos':>6}  created")
        for r in rows:
            print(f"{r['id']:10} {r['name']:24} {r['photos']:>6}  {r['created']}")
    return 0


def cmd_people_show(args: argparse.Namespace) -> int:
    ws = Workspace.find(args.workspace)
    with ws.open_store() as store:
        person = store.person(args.person)
        faces = store.faces(person=person.id)
    print(f"{person.id}  {person.name}  (created {person.created})")
    for f in faces:
        q = f.quality
        print(
            f"  face {f.id:5} {f.status:9} {f.image_path}  size {q.get('size_px')}px "
            f"sharp {q.get('sharpness')} frontal {q.get('frontalness')}"
            + (" greyscale/IR" if q.get("greyscale") else "")
        )
    return 0


def cmd_people_rename(args: argparse.Namespace) -> int:
    ws = Workspace.find(args.workspace)
    with ws.open_store() as store:
        person = store.rename_person(args.person, args.new_name)
    print(f"{person.id}\t{person.name}")
    return 0


def cmd_people_merge(args: argparse.Namespace) -> int:
    from facefleet.store import merges

    ws = Workspace.find(args.workspace)
    with ws.open_store() as store:
        m = merges.merge(store, args.person, args.into)
    print(
        f"merged {m.name} into {m.into_name}: {m.faces} faces moved; train again to use them "
        f"(merge {m.id}: 'facefleet people unmerge {m.id}' undoes it)"
    )
    return 0


def cmd_people_accept_alike(args: argparse.Namespace) -> int:
    from facefleet.train.lookalikes import accept

    ws = Workspace.find(args.workspace)
    with ws.open_store() as store:
        one, other = accept(store, args.person, args.other, by="cli", undo=args.undo)
    if args.undo:
        print(f"{one.name} and {other.name}: no longer accepted as two people")
    else:
        print(f"{one.name} and {other.name} accepted as two people: look-alike lists mark the pair")
    return 0


def cmd_people_merges(args: argparse.Namespace) -> int:
    from facefleet.store import merges

    ws = Workspace.find(args.workspace)
    with ws.open_store() as store:
        done = merges.merges(store)
    if args.json:
        print(json.dumps([m.as_dict() for m in done], indent=2))
        return 0
    if not done:
        print("no merges")
    for m in done:
        now = f"undone {m.undone}" if m.undone else f"faces with {m.holder_name or 'nobody (removed)'}"
        print(f"{m.id:4}  {m.created}  {m.name} into {m.into_name}: {m.faces} faces; {now}")
    return 0


def cmd_people_unmerge(args: argparse.Namespace) -> int:
    from facefleet.store import merges

    ws = Workspace.find(args.workspace)
    with ws.open_store() as store:
        m = merges.unmerge(store, args.merge)
    print(f"{m.name} ({m.person_id}) is back: {m.faces} faces moved back from {m.holder_name}; train again")
    return 0


def cmd_people_remove(args: argparse.Namespace) -> int:
    ws = Workspace.find(args.workspace)
    with ws.open_store() as store:
        person = store.person(args.person)
        count = store.remove_person(person.id)
    print(f"removed {person.name} ({person.id}) and {count} faces")
    return 0


def cmd_people_revoke(args: argparse.Namespace) -> int:
    from facefleet.enrol import revoke_person

    count = revoke_person(Workspace.find(args.workspace), args.person)
    print(f"revoked {count} faces of {args.person}")
    return 0


def cmd_people_remove_photo(args: argparse.Namespace) -> int:
    from facefleet.enrol import remove_photo

    name = remove_photo(Workspace.find(args.workspace), args.face_id)
    print(f"removed face {args.face_id} of {name}")
    return 0


def cmd_identify(args: argparse.Namespace) -> int:
    from facefleet.identify import identify, results_to_csv

    ws = Workspace.find(args.workspace)
    model = args.model
    if args.threshold is None or model:
        from facefleet.identify import model_choice

        chosen = model_choice(ws, model)
        if chosen is None:
            print("model: none trained yet; names come from the enrolled gallery", file=sys.stderr)
        else:
            print(f"model: {chosen.model} {chosen.reason}", file=sys.stderr)
            model = str(chosen.version)
    results = identify(ws, args.paths, model=model, threshold=args.threshold, workers=args.workers)
    if args.json:
        print(json.dumps(results, indent=2))
    elif args.csv:
        sys.stdout.write(results_to_csv(results))
    else:
        for res in results:
            if res["error"]:
                print(f"{res['path']}: error: {res['error']}")
            elif not res["faces"]:
                print(f"{res['path']}: no face")
            for face in res["faces"]:
                name = face["name"] or f"unknown (nearest {face['candidate']})"
                print(f"{res['path']}: {name}  distance {face['distance']:.3f}  box {face['box']}")
    if all(res["error"] for res in results):
        print(f"facefleet: error: none of the {len(results)} inputs could be read", file=sys.stderr)
        return 1
    return 0


def cmd_export_database(args: argparse.Namespace) -> int:
    from facefleet.store.export import write_face_database

    ws = Workspace.find(args.workspace)
    with ws.open_store() as store:
        path = write_face_database(store, args.out)
    print(path)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from facefleet.demo import run_demo

    target = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="facefleet-demo-"))
    report = run_demo(target, args.data)
    print("\n".join(report.lines()))
    return 0 if report.accuracy >= 0.9 else 1

"""``facefleet users add|list|passwd|role|remove``: accounts of the web console."""

from __future__ import annotations

import argparse
import getpass
import sys

from facefleet.errors import FacefleetError
from facefleet.workspace import Workspace


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise FacefleetError("no terminal to ask for a password: pass --password-stdin")
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise FacefleetError("the passwords differ")
    if not password:
        raise FacefleetError("empty password")
    return password


def cmd_users(args: argparse.Namespace) -> int:
    from facefleet.web.console import accounts

    ws = Workspace.find(args.workspace)
    with ws.open_store() as store:
        if args.users_cmd == "add":
            user = accounts.add_user(store, args.name, args.role, _password(args))
            print(f"added {user.name} ({user.role})")
        elif args.users_cmd == "passwd":
            accounts.set_password(store, args.name, _password(args))
            print(f"new password for {args.name}; their sessions ended")
        elif args.users_cmd == "role":
            user = accounts.set_role(store, args.name, args.role)
            print(f"{user.name} is now {user.role}")
        elif args.users_cmd == "remove":
            accounts.remove_user(store, args.name)
            print(f"removed {args.name}")
        else:
            users = accounts.list_users(store)
            if not users:
                print("no users yet: facefleet users add NAME --role admin")
            for u in users:
                print(f"{u.name}\t{u.role}\tcreated {u.created}\tlast sign-in {u.last_login or '-'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from facefleet.web.console.accounts import ROLES

    p = sub.add_parser("users", help="web console accounts: add, list, passwd, role, remove")
    usub = p.add_subparsers(dest="users_cmd", metavar="ACTION", required=True)
    q = usub.add_parser("add", help="create a user (asks for the password)")
    q.add_argument("name", help="sign-in name")
    q.add_argument(
        "--role",
        required=True,
        choices=ROLES,
        help="admin: everything; reviewer: review, label, enrol; viewer: read only",
    )
    q.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    q.set_defaults(func=cmd_users)
    q = usub.add_parser("passwd", help="set a new password (ends the user's sessions)")
    q.add_argument("name", help="sign-in name")
    q.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    q.set_defaults(func=cmd_users)
    q = usub.add_parser("role", help="change a user's role")
    q.add_argument("name", help="sign-in name")
    q.add_argument("role", choices=ROLES, help="the new role")
    q.set_defaults(func=cmd_users)
    q = usub.add_parser("remove", help="delete a user")
    q.add_argument("name", help="sign-in name")
    q.set_defaults(func=cmd_users)
    q = usub.add_parser("list", help="users and roles")
    q.set_defaults(func=cmd_users)

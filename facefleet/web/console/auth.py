"""Console sessions: a signed, HttpOnly, SameSite=Strict cookie; CSRF tokens; role checks.

The cookie holds ``{user, epoch, sid}`` signed with the workspace's console secret
(``keys/console_secret``, made on first use, mode 0600) and expires after
``console.session_hours``. A session is valid while the user exists with the same epoch.
Every state-changing request carries a CSRF token (a form field ``csrf`` or the header
``X-CSRF-Token``) derived from the session id with HMAC; roles are checked here, on the server.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request

from facefleet.web.console import accounts

COOKIE = "facefleet_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


class NotSignedInError(Exception):
    """Raised by ``current``: pages redirect to the sign-in page, fragments get 401."""


@dataclass(frozen=True)
class Session:
    user: accounts.User
    sid: str
    csrf: str


def load_secret(keys_dir: Path) -> bytes:
    """The console's signing secret; created (0600, atomically) when missing."""
    path = Path(keys_dir) / "console_secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".console_secret.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # never replace a secret another process just made
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return bytes.fromhex(path.read_text().strip())


class Sessions:
    """Signs and checks session cookies and CSRF tokens."""

    def __init__(self, secret: bytes, hours: float = 12.0, secure: bool = False) -> None:
        from itsdangerous import URLSafeTimedSerializer

        self.secret = secret
        self.max_age = int(hours * 3600)
        self.secure = secure
        self.signer = URLSafeTimedSerializer(secret, salt="facefleet-console-session")

    def csrf_for(self, sid: str) -> str:
        return hmac.new(self.secret, b"csrf:" + sid.encode(), hashlib.sha256).hexdigest()

    def cookie_for(self, user: accounts.User) -> str:
        return self.signer.dumps({"u": user.name, "e": user.epoch, "s": secrets.token_urlsafe(16)})

    def set_cookie(self, response: Any, user: accounts.User) -> None:
        response.set_cookie(
            COOKIE,
            self.cookie_for(user),
            max_age=self.max_age,
            httponly=True,
            samesite="strict",
            secure=self.secure,
            path="/",
        )

    @staticmethod
    def clear_cookie(response: Any) -> None:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")

    def read(self, cookie: str | None, store_opener: Any) -> Session | None:
        """The session a cookie names, or None (missing, forged, expired, user gone/changed)."""
        from itsdangerous import BadSignature

        if not cookie:
            return None
        try:
            data = self.signer.loads(cookie, max_age=self.max_age)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not {"u", "e", "s"} <= set(data):
            return None
        store = store_opener()
        try:
            user = accounts.find_user(store, str(data["u"]))
        finally:
            store.close()
        if user is None or user.epoch != data["e"]:
            return None
        sid = str(data["s"])
        return Session(user, sid, self.csrf_for(sid))


def current(request: Request) -> Session:
    """The signed-in session (set by the console middleware), or ``NotSignedInError``."""
    session = getattr(request.state, "session", None)
    if session is None:
        raise NotSignedInError()
    return session


def require(request: Request, role: str) -> Session:
    """The session when its user holds ``role``; 403 otherwise."""
    session = current(request)
    if not session.user.can(role):
        raise HTTPException(403, f"this needs the {role} role; {session.user.name} is {session.user.role}")
    return session


async def check_csrf(request: Request, session: Session) -> None:
    """403 unless the request carries this session's CSRF token."""
    sent = request.headers.get(CSRF_HEADER)
    if not sent:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, session.csrf):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")

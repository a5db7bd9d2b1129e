"""The console's plumbing: settings, templates, the session middleware, sign-in and sign-out,
error pages, static files, images and thumbnails. The pages live in their own modules
(``review``, ``people``, ``models``, ``fleet``, ``events``), each an ``APIRouter``."""

from __future__ import annotations

import contextlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from facefleet.errors import FacefleetError
from facefleet.web.console import accounts, auth, files

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
WRONG_LOGIN = "wrong name or password"
API_PATHS = ("/v1", "/health", "/docs", "/openapi.json", "/redoc", "/static")


class Console:
    """What every page needs: the workspace, settings, sessions, templates, the embedder id."""

    def __init__(self, ws: Any) -> None:
        from jinja2 import Environment, FileSystemLoader, select_autoescape

        self.ws = ws
        self.settings = ws.settings.console
        self.sessions = auth.Sessions(
            auth.load_secret(ws.keys_dir), self.settings.session_hours, self.settings.secure_cookie
        )
        # a wrong password for one name slows that name; many from one address slow it
        self.user_throttle = accounts.Throttle(free=3)
        self.ip_throttle = accounts.Throttle(free=10)
        with self.store() as st:
            accounts.ensure(st)
        self.env = Environment(
            loader=FileSystemLoader(str(HERE / "templates")),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals["thumb_url"] = lambda face_id: f"/thumbs/{int(face_id)}.jpg"
        self.env.globals["file_url"] = self.file_url
        self.env.filters["pct"] = lambda v: "-" if v is None else f"{100 * float(v):.1f} %"
        self.env.filters["num"] = lambda v, p=3: "-" if v is None else f"{float(v):.{p}f}"
        self.env.filters["urlq"] = lambda v: quote(str(v), safe="")
        self.env.filters["val"] = lambda v: "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else v)
        self._embedder_id: str | None = None
        self._lock = threading.Lock()
        self.cache: dict[str, Any] = {}  # page data remembered while the store is unchanged
        self.cache_lock = threading.Lock()
        self.jobs: Any = None  # facefleet.web.console.fleet.Jobs, set by that module

    # -- helpers pages use -------------------------------------------------------------
    def remember(self, name: str, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()``, or what it gave last time for ``name`` if ``key`` is unchanged."""
        with self.cache_lock:
            hit = self.cache.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        value = compute()
        with self.cache_lock:
            if len(self.cache) > 256:
                self.cache.clear()
            self.cache[name] = (key, value)
        return value

    @contextlib.contextmanager
    def store(self) -> Iterator[Any]:
        st = self.ws.open_store()
        try:
            yield st
        finally:
            st.close()

    def embedder_id(self) -> str:
        with self._lock:
            if self._embedder_id is None:
                from facefleet.train.pipeline import current_embedder_id

                self._embedder_id = current_embedder_id(self.ws)
            return self._embedder_id

    def file_url(self, path: str | Path) -> str | None:
        """The console's address of a workspace file a browser can show, else None (no link)."""
        rel = files.relative(self.ws.root, path)
        if rel is None or Path(rel).suffix.lower() not in files.IMAGE_SUFFIXES:
            return None
        return "/files/" + quote(rel)

    def render(self, request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        session = getattr(request.state, "session", None)
        html = self.env.get_template(template).render(
            request=request,
            session=session,
            user=session.user if session else None,
            csrf=session.csrf if session else "",
            msg=request.query_params.get("msg"),
            err=request.query_params.get("err"),
            **context,
        )
        return HTMLResponse(html, status_code=status_code)

    @staticmethod
    def back(path: str, **params: Any) -> RedirectResponse:
        """A 303 back to a page (after a form post), with a message for the person."""
        query = urlencode({k: v for k, v in params.items() if v is not None})
        return RedirectResponse(path + ("?" + query if query else ""), status_code=303)


def console_of(request: Request) -> Console:
    return request.app.state.console


async def writer(request: Request, role: str) -> auth.Session:
    """A state-changing request: signed in, the CSRF token right, the role held."""
    session = auth.current(request)
    await auth.check_csrf(request, session)
    return auth.require(request, role)


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def page_args(request: Request, size: int) -> tuple[int, int]:
    """``(page, offset)`` from ``?page=`` (1-based)."""
    try:
        page = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        page = 1
    return page, (page - 1) * size


# -- sign-in -------------------------------------------------------------------------------
router = APIRouter()


LOGIN_COOKIE = "facefleet_login"


def _login_form(c: Console, request: Request, status_code: int = 200, **context: Any) -> Response:
    """The sign-in page with a fresh pre-session CSRF token (a cookie and its form field)."""
    token = request.cookies.get(LOGIN_COOKIE) or ""
    if not re.fullmatch(r"[A-Za-z0-9_-]{16,64}", token):
        token = secrets.token_urlsafe(16)
    context.setdefault("first_run", False)
    context.setdefault("next", request.query_params.get("next", "/"))
    csrf = c.sessions.csrf_for("login:" + token)
    response = c.render(request, "login.html", status_code=status_code, login_csrf=csrf, **context)
    response.set_cookie(
        LOGIN_COOKIE, token, max_age=3600, httponly=True, samesite="strict", secure=c.settings.secure_cookie
    )
    return response


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    c = console_of(request)
    with c.store() as st:
        first_run = not accounts.list_users(st)
    return _login_form(c, request, first_run=first_run)


@router.post("/login")
async def login(request: Request) -> Response:
    c = console_of(request)
    form = await request.form()
    name = str(form.get("username") or "").strip()
    password = str(form.get("password") or "")
    target = str(form.get("next") or "/")
    if not target.startswith("/") or target.startswith("//"):
        target = "/"
    cookie = request.cookies.get(LOGIN_COOKIE) or ""
    sent = str(form.get(auth.CSRF_FIELD) or "")
    if not cookie or not hmac.compare_digest(sent, c.sessions.csrf_for("login:" + cookie)):
        return _login_form(c, request, 403, next=target, error="the sign-in form expired: please try again")
    ip = request.client.host if request.client else "?"
    wait = max(c.user_throttle.wait(name), c.ip_throttle.wait(ip))
    if wait > 0:
        error = f"too many failed sign-ins: try again in {wait:.0f} s"
        return _login_form(c, request, 429, next=target, error=error)
    with c.store() as st:
        user = accounts.verify(st, name, password)
    if user is None:
        c.user_throttle.failed(name)
        c.ip_throttle.failed(ip)
        return _login_form(c, request, 401, next=target, error=WRONG_LOGIN)
    c.user_throttle.succeeded(name)
    c.ip_throttle.succeeded(ip)
    response = RedirectResponse(target, status_code=303)
    c.sessions.set_cookie(response, user)
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    session = auth.current(request)
    await auth.check_csrf(request, session)
    response = RedirectResponse("/login", status_code=303)
    auth.Sessions.clear_cookie(response)
    return response


@router.get("/")
def home(request: Request) -> Response:
    auth.current(request)
    return RedirectResponse("/review", status_code=303)


# -- images ----------------------------------------------------------------------------------
@router.get("/files/{path:path}")
def workspace_file(path: str, request: Request) -> Response:
    """An image inside the workspace (photos, plots, snapshots) for signed-in users."""
    auth.current(request)
    c = console_of(request)
    try:
        real = files.inside(c.ws.root, path)
    except files.PathRefusedError as exc:
        raise HTTPException(404, str(exc)) from None
    return FileResponse(
        real,
        media_type=files.MEDIA_TYPES.get(real.suffix.lower(), "application/octet-stream"),
        headers={"Cache-Control": "private, max-age=300"},
    )


@router.get("/thumbs/{face_id}.jpg")
def thumb(face_id: int, request: Request) -> Response:
    auth.current(request)
    c = console_of(request)
    with c.store() as st:
        try:
            face = st.face(face_id)
        except FacefleetError:
            raise HTTPException(404, f"no face {face_id}") from None
    try:
        path = files.thumbnail(
            c.ws.root, c.ws.cache_dir, face.id, face.image_path, face.image_sha256, face.box
        )
    except files.PathRefusedError as exc:
        raise HTTPException(404, str(exc)) from None
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


# -- installation ---------------------------------------------------------------------------
def install(app: FastAPI, ws: Any) -> None:
    from facefleet.web.console import events, fleet, models, people, review

    console = Console(ws)
    app.state.console = console
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="console-static")
    for r in (router, review.router, people.router, models.router, fleet.router, events.router):
        app.include_router(r, include_in_schema=False)
    fleet.attach(console)

    @app.middleware("http")
    async def console_session(request: Request, call_next: Any) -> Response:
        path = request.url.path
        if path.startswith(API_PATHS):
            return await call_next(request)
        if request.method not in ("GET", "HEAD"):
            length = request.headers.get("content-length")
            if length is None and request.headers.get("transfer-encoding"):
                return HTMLResponse("uploads need a Content-Length", status_code=411)
            if length is not None and length.isdigit() and int(length) > console.settings.max_upload_bytes:
                limit = console.settings.max_upload_mb
                return HTMLResponse(
                    f"the upload is larger than the limit of {limit:g} MB (console.max_upload_mb)",
                    status_code=413,
                )
        start = time.perf_counter()
        request.state.session = console.sessions.read(request.cookies.get(auth.COOKIE), ws.open_store)
        response = await call_next(request)
        response.headers["Server-Timing"] = f"app;dur={1000 * (time.perf_counter() - start):.1f}"
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'",
        )
        return response

    @app.exception_handler(auth.NotSignedInError)
    async def not_signed_in(request: Request, exc: auth.NotSignedInError) -> Response:
        if request.method == "GET" and not is_htmx(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)
        return HTMLResponse("sign in first", status_code=401, headers={"HX-Redirect": "/login"})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        path = request.url.path
        if path.startswith(API_PATHS):
            from fastapi.exception_handlers import http_exception_handler

            return await http_exception_handler(request, exc)
        if is_htmx(request):
            return HTMLResponse(f'<p class="error">{_esc(str(exc.detail))}</p>', status_code=exc.status_code)
        return console.render(
            request, "error.html", status_code=exc.status_code, code=exc.status_code, detail=str(exc.detail)
        )


def _esc(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))

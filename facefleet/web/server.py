"""The model server: devices pull signed bundles over HTTP and report heartbeats.

Endpoints (OpenAPI docs at ``/docs``; every ``/v1`` endpoint needs ``Authorization: Bearer
<token>``, tokens made with ``facefleet tokens create``):

- ``GET /v1/models/{model}/{ref}/manifest``: the manifest of version ``ref`` (``3``, ``v3``)
  or alias ``ref`` (``production``, ``@production``).
- ``GET /v1/models/{model}/{ref}/bundle.tar.gz``: the packed bundle; ``ETag`` is its sha256
  and ``If-None-Match`` with that value gives ``304 Not Modified``.
- ``POST /v1/heartbeat``: ``{device, model, version, fps, snapshot}`` (device defaults to
  the token's; ``snapshot`` an optional base64 JPEG up to 256 KB); shown by
  ``facefleet fleet status`` and the console.
- ``/``: the web console (``facefleet.web.console``), signed-in users only.
- ``GET /health``: liveness, no token.

Every GET route also answers HEAD. Bad input is a 4xx with a one-line ``detail`` that never
shows the server's folders: a model name is ``[A-Za-z0-9][A-Za-z0-9_.-]*`` (at most 100
characters), a version reference at most 9 digits (optionally ``v``-prefixed) or an alias
name of at most 64 such characters; a heartbeat has a version >= 0 and a finite fps in
0..1000. A bundle that cannot be served (a link or a folder inside it, no manifest) is 409.

Bundles come from the workspace's ``models/`` folder; aliases from the MLflow registry when
the workspace has one, else from ``models/aliases.json`` (see ``facefleet.fleet.catalog``).
The server only serves files; devices verify signatures themselves.
"""

# No "from __future__ import annotations": FastAPI must see the closures in Annotated[...].
import re
import tarfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from facefleet.errors import BundleError, FacefleetError
from facefleet.fileio import sha256_file as _sha256_file
from facefleet.fleet import catalog, records, snapshots
from facefleet.registry.catalog import ALIASES_FILE, ResolvedVersion, resolve
from facefleet.registry.format import read_manifest

if TYPE_CHECKING:
    from facefleet.workspace import Workspace

API_PREFIX = "/v1"
CACHE_SECONDS = 2.0  # how long an alias lookup on a PostgreSQL/HTTP registry is reused
TOUCH_SECONDS = 60.0  # a token's last_used is written at most this often
KEEP_ALIVE_SECONDS = 75  # idle keep-alive connections (nginx's default)
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
_REF = re.compile(r"^(?:[vV]?(?P<digits>[0-9]{1,9})|@?(?P<alias>[A-Za-z][A-Za-z0-9_.\-]{0,63}))$")
ModelName = Annotated[str, PathParam(pattern=MODEL_NAME, description="model name")]


class Heartbeat(BaseModel):
    """What a device reports."""

    device: str | None = Field(default=None, min_length=1, max_length=200)
    model: str = Field(default="face_model", pattern=MODEL_NAME)
    version: int | None = Field(default=None, ge=0, le=2**31 - 1)
    fps: float | None = Field(default=None, ge=0, le=1000, allow_inf_nan=False)
    snapshot: str | None = Field(default=None, max_length=360_000)  # base64 JPEG, <= 256 KB


def parse_ref(ref: str) -> str | None:
    """A version reference as the catalog takes it (``3``, ``v3``, ``@alias``, or a bare alias
    made ``@alias``), or None when it cannot name anything."""
    match = _REF.match(ref)
    if match is None:
        return None
    if match["digits"] is not None:
        return ref
    return ref if ref.startswith("@") else f"@{ref}"


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (quoted or not, weak or not, or *)."""
    if not header:
        return False
    for part in header.split(","):
        tag = part.strip().removeprefix("W/").strip('"')
        if tag in ("*", etag):
            return True
    return False


def create_app(ws: "Workspace") -> FastAPI:
    """The FastAPI application serving ``ws``'s bundles."""
    app = FastAPI(
        title="facefleet model server", version="1", description="Signed face-model bundles for edge devices."
    )
    sha_cache: dict[tuple[str, float, int], str] = {}
    # A fleet polls every few seconds. Per request the server now reads, but does not write,
    # the token row (its last_used is refreshed at most every TOUCH_SECONDS), and reuses what
    # an alias resolved to until the registry or the models folder changes on disk (a
    # PostgreSQL or HTTP registry has no such signal: there the answer is kept CACHE_SECONDS).
    touched: dict[str, float] = {}
    resolved: dict[tuple[str, str], tuple[tuple, ResolvedVersion]] = {}
    pack_lock = threading.Lock()
    local = threading.local()
    remote_registry = bool(ws.configured_tracking_uri) and not ws.tracking_uri.startswith("sqlite:")

    def thread_store():  # one connection per server thread: sqlite connections stay in theirs
        st = getattr(local, "store", None)
        if st is None:
            st = local.store = records.open_store(ws)
        return st

    @app.exception_handler(RequestValidationError)
    def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input back, and NaN / 1e999 cannot be JSON: say
        # which field is wrong and why, in one line, without the value
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()) if p != 'body')}: {err.get('msg', 'invalid')}"
            for err in exc.errors()
        )
        return JSONResponse(status_code=422, content={"detail": problems or "invalid request"})

    def device(authorization: Annotated[str | None, Header()] = None) -> str:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "bearer token required", headers={"WWW-Authenticate": "Bearer"})
        key = records.hash_token(token.strip())
        now = time.monotonic()
        touch = touched.get(key, -TOUCH_SECONDS) + TOUCH_SECONDS <= now
        name = records.check_token(thread_store(), token.strip(), touch=touch)
        if name is None:
            raise HTTPException(
                401, "unknown or revoked token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )
        if touch:
            touched[key] = now
        return name

    hidden = sorted({str(Path(ws.models_dir)), str(Path(ws.root))}, key=len, reverse=True)

    def public(message: str) -> str:
        """``message`` without the server's folders."""
        for folder in hidden:
            message = message.replace(folder, "<models>" if folder.endswith("models") else "<workspace>")
        return message

    def generation(model: str) -> tuple:
        """Changes whenever an alias, a version or a bundle file may have changed."""
        paths = (
            ws.models_dir,
            ws.models_dir / model,
            ws.models_dir / ALIASES_FILE,
            ws.root / "mlflow.db",
            ws.root / "mlflow.db-wal",
        )
        stamps = []
        for path in paths:
            try:
                stamps.append(path.stat().st_mtime_ns)
            except OSError:
                stamps.append(None)
        if remote_registry:
            stamps.append(int(time.monotonic() / CACHE_SECONDS))
        return tuple(stamps)

    def bundle_for(model: str, ref: str) -> ResolvedVersion:
        text = parse_ref(ref)
        if text is None:
            raise HTTPException(404, f"{ref[:40]!r} is not a version number or an alias name")
        stamp = generation(model)
        hit = resolved.get((model, text))
        if hit is not None and hit[0] == stamp:
            return hit[1]
        try:
            found = resolve(ws, text, model=model, fetch=False)
        except FacefleetError as exc:
            raise HTTPException(404, public(str(exc))) from None
        resolved[(model, text)] = (stamp, found)
        return found

    def unservable(found: ResolvedVersion, exc: Exception) -> HTTPException:
        return HTTPException(409, f"{found.model} v{found.version} cannot be served: {public(str(exc))}")

    def packed(found: ResolvedVersion) -> Path:
        with pack_lock:  # concurrent first requests for a new version pack it once
            return catalog.packed(ws, found)

    def etag_of(path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_mtime, st.st_size)
        if key not in sha_cache:
            with pack_lock:
                if key not in sha_cache:
                    sha_cache[key] = _sha256_file(path)
        return sha_cache[key]

    @app.get("/health")
    @app.head("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(API_PREFIX + "/models/{model}/{ref}/manifest")
    @app.head(API_PREFIX + "/models/{model}/{ref}/manifest", include_in_schema=False)
    def manifest(model: ModelName, ref: str, _: Annotated[str, Depends(device)]) -> dict[str, Any]:
        """The manifest (labels, thresholds, version, files) of a version or alias."""
        found = bundle_for(model, ref)
        try:
            return read_manifest(found.path, need_files=False)
        except BundleError:
            raise HTTPException(409, f"{found.model} v{found.version} has no readable manifest") from None

    @app.get(API_PREFIX + "/models/{model}/{ref}/bundle.tar.gz")
    @app.head(API_PREFIX + "/models/{model}/{ref}/bundle.tar.gz", include_in_schema=False)
    def bundle(model: ModelName, ref: str, request: Request, _: Annotated[str, Depends(device)]) -> Response:
        """The packed bundle; ETag = sha256 of the archive, If-None-Match -> 304."""
        found = bundle_for(model, ref)
        try:
            path = packed(found)
            etag = etag_of(path)
        except (FacefleetError, OSError, tarfile.TarError) as exc:
            raise unservable(found, exc) from None
        headers = {
            "ETag": f'"{etag}"',
            "X-Facefleet-Version": str(found.version),
            "Cache-Control": "no-cache",
        }
        if etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        return FileResponse(
            path, media_type="application/gzip", headers=headers, filename=f"{model}-{found.version}.tar.gz"
        )

    @app.post(API_PREFIX + "/heartbeat")
    def heartbeat(beat: Heartbeat, request: Request, name: Annotated[str, Depends(device)]) -> dict[str, str]:
        """Record a device's running version and FPS (the token names the device)."""
        if beat.device is not None and beat.device != name:
            raise HTTPException(403, f"this token belongs to {name!r}, not {beat.device!r}")
        if beat.snapshot:
            try:
                snapshots.save_snapshot(ws, name, snapshots.decode(beat.snapshot))
            except FacefleetError as exc:
                raise HTTPException(422, str(exc)) from None
        remote = request.client.host if request.client else None
        records.record_heartbeat(thread_store(), name, beat.model, beat.version, beat.fps, remote)
        return {"status": "recorded"}

    from facefleet.web.console import mount

    mount(app, ws)
    return app


def serve(ws: "Workspace", host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run the server until interrupted."""
    import uvicorn

    # devices poll every few seconds: keep their connections open longer than uvicorn's 5 s,
    # else a request sent as the server drops an idle connection fails with a reset
    uvicorn.run(create_app(ws), host=host, port=port, log_level="info", timeout_keep_alive=KEEP_ALIVE_SECONDS)

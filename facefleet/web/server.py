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

Bundles come from the workspace's ``models/`` folder; aliases from the MLflow registry when
the workspace has one, else from ``models/aliases.json`` (see ``facefleet.fleet.catalog``).
The server only serves files; devices verify signatures themselves.
"""

# No "from __future__ import annotations": FastAPI must see the closures in Annotated[...].
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from facefleet.errors import BundleError, FacefleetError
from facefleet.fileio import sha256_file as _sha256_file
from facefleet.fleet import catalog, records, snapshots
from facefleet.registry.catalog import ResolvedVersion, resolve
from facefleet.registry.format import read_manifest

if TYPE_CHECKING:
    from facefleet.workspace import Workspace

API_PREFIX = "/v1"


class Heartbeat(BaseModel):
    """What a device reports."""

    device: str | None = Field(default=None, min_length=1, max_length=200)
    model: str = Field(default="face_model", min_length=1, max_length=200)
    version: int | None = None
    fps: float | None = Field(default=None, ge=0)
    snapshot: str | None = Field(default=None, max_length=360_000)  # base64 JPEG, <= 256 KB


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

    def device(authorization: Annotated[str | None, Header()] = None) -> str:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "bearer token required", headers={"WWW-Authenticate": "Bearer"})
        # one short-lived connection per request: sqlite connections stay in their thread
        st = records.open_store(ws)
        try:
            name = records.check_token(st, token.strip())
        finally:
            st.close()
        if name is None:
            raise HTTPException(
                401, "unknown or revoked token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            )
        return name

    def bundle_for(model: str, ref: str) -> ResolvedVersion:
        text = ref if ref[:1] in "@vV" or ref.isdigit() else f"@{ref}"
        try:
            return resolve(ws, text, model=model, fetch=False)
        except FacefleetError as exc:
            raise HTTPException(404, str(exc)) from None

    def etag_of(path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_mtime, st.st_size)
        if key not in sha_cache:
            sha_cache[key] = _sha256_file(path)
        return sha_cache[key]

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(API_PREFIX + "/models/{model}/{ref}/manifest")
    def manifest(model: str, ref: str, _: Annotated[str, Depends(device)]) -> dict[str, Any]:
        """The manifest (labels, thresholds, version, files) of a version or alias."""
        found = bundle_for(model, ref)
        try:
            return read_manifest(found.path, need_files=False)
        except BundleError:
            raise HTTPException(500, f"bundle {found.path.name} has no readable manifest") from None

    @app.get(API_PREFIX + "/models/{model}/{ref}/bundle.tar.gz")
    def bundle(model: str, ref: str, request: Request, _: Annotated[str, Depends(device)]) -> Response:
        """The packed bundle; ETag = sha256 of the archive, If-None-Match -> 304."""
        found = bundle_for(model, ref)
        path = catalog.packed(ws, found)
        etag = etag_of(path)
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
        st = records.open_store(ws)
        try:
            records.record_heartbeat(st, name, beat.model, beat.version, beat.fps, remote)
        finally:
            st.close()
        return {"status": "recorded"}

    from facefleet.web.console import mount

    mount(app, ws)
    return app


def serve(ws: "Workspace", host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run the server until interrupted."""
    import uvicorn

    uvicorn.run(create_app(ws), host=host, port=port, log_level="info")

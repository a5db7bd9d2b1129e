"""Models: versions with their metrics, per-person thresholds and training plots, aliases,
promote and roll back (admin, with a required reason), the audit history, and the diff of
two versions. Everything goes through ``facefleet.registry.versions``."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from facefleet.errors import BundleError, FacefleetError
from facefleet.registry import versions as reg
from facefleet.registry.format import read_manifest
from facefleet.registry.inference import MARGIN_RULE
from facefleet.train import lookalikes
from facefleet.train.model import far_line
from facefleet.web.console import auth
from facefleet.web.console.app import console_of, writer

router = APIRouter()

# what people ask about a version, and the metric keys that answer it (first found wins):
# measured on held-out photos (validate, evaluate), else the training's own estimate
SUMMARY = {
    "accuracy": ("accuracy", "val_accuracy", "test_accuracy", "closed_set_accuracy", "cv_accuracy"),
    "strangers named": ("unknown_false_accept_rate", "far"),
    "known rejected": ("known_false_reject_rate", "frr"),
}


def summary_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    """The headline figures of a version from its metrics (pure). A key also matches under a
    prefix (``val_known_false_reject_rate``) when it is a multi-word name; a short one such as
    ``far`` only as itself (``target_far`` and ``gallery_far`` are other figures)."""
    out: dict[str, float | None] = {}
    for label, keys in SUMMARY.items():
        out[label] = None
        for key in keys:
            hit = metrics.get(key)
            if hit is None and "_" in key:
                hit = next((v for k, v in metrics.items() if k.endswith("_" + key)), None)
            if hit is not None:
                out[label] = hit
                break
    return out


def _manifest(c: Any, info: reg.ModelVersionInfo) -> dict[str, Any]:
    """The version's manifest from the workspace's models folder ({} when it is not there)."""
    path = Path(c.ws.models_dir) / info.model / str(info.version)
    try:
        return read_manifest(path, need_files=False)
    except BundleError:
        return {}


def _plots(c: Any, info: reg.ModelVersionInfo) -> list[dict[str, str]]:
    """The run's training plots, when its artifacts are files in the workspace."""
    uri = info.source.rsplit("/bundle", 1)[0] if info.source else ""
    parsed = urlparse(uri)
    if parsed.scheme not in ("file", ""):
        return []
    folder = Path(unquote(parsed.path)) / "plots"
    if not folder.is_dir():
        return []
    out = []
    for png in sorted(folder.glob("*.png")):
        url = c.file_url(png)
        if url:
            out.append({"name": png.stem.replace("_", " "), "url": url})
    return out


def _registry_key(ws: Any) -> tuple | None:
    """A signature of the registry's state: the MLflow SQLite files and the audit log (None
    for a tracking server, whose changes cannot be seen from here)."""
    uri = ws.tracking_uri
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///") :])
    parts = []
    for path in (db, db.with_name(db.name + "-wal"), reg.audit_path(ws)):
        try:
            st = path.stat()
            parts.append((st.st_mtime_ns, st.st_size))
        except OSError:
            parts.append(None)
    return tuple(parts)


def _memo(c: Any, name: str, compute: Any) -> Any:
    """``compute()``, remembered while the registry is unchanged (MLflow reads are the slow
    part of these pages; any promote, rollback or training changes the signature)."""
    key = _registry_key(c.ws)
    return compute() if key is None else c.remember(name, key, compute)


def _versions(c: Any) -> list[reg.ModelVersionInfo]:
    from facefleet.registry.tracking import has_tracking_store

    if not has_tracking_store(c.ws):  # no MLflow database is created just to find no model
        return []
    try:
        return reg.list_versions(c.ws)
    except reg.VersionError:
        return []


@router.get("/models")
def models(request: Request) -> Response:
    auth.current(request)
    c = console_of(request)
    infos = _memo(c, "registry:versions", lambda: _versions(c))
    rows = [{"info": i, "summary": summary_metrics(i.metrics)} for i in infos]
    holders = {a: next((i.version for i in infos if a in i.aliases), None) for a in reg.ALIASES}
    history = list(reversed(reg.audit_log(c.ws)))[:100]
    return c.render(
        request,
        "models.html",
        rows=rows,
        aliases=reg.ALIASES,
        holders=holders,
        history=history,
        model=reg.model_name(c.ws),
    )


@router.get("/models/diff")
def diff(request: Request) -> Response:
    auth.current(request)
    c = console_of(request)
    a, b = request.query_params.get("a"), request.query_params.get("b")
    if not a or not b:
        raise HTTPException(400, "choose two versions to compare")
    try:
        d = _memo(c, f"registry:diff:{a}:{b}", lambda: reg.diff(c.ws, a, b))
    except FacefleetError as exc:
        raise HTTPException(404, str(exc)) from None
    # the thresholds from the local bundles when MLflow holds no manifest
    if not d.thresholds:
        ta = _manifest(c, d.a).get("thresholds") or {}
        tb = _manifest(c, d.b).get("thresholds") or {}
        d.thresholds = reg.diff_mappings(ta, tb)
        if not (d.labels_added or d.labels_removed):
            d.labels_removed, d.labels_added = reg.diff_labels(list(ta), list(tb))
    return c.render(request, "diff.html", d=d)


def threshold_rule(open_set: dict[str, Any]) -> tuple[str, str]:
    """The thresholds column's heading and the sentence saying what they bound: a score of
    the centroid-margin rule, or (older bundles) the plain distance to the person."""
    if open_set.get("rule") != MARGIN_RULE:
        return "distance threshold", "A face is named when its distance to the person is at most this."
    margin, far, most = (float(open_set[k]) for k in ("margin", "far_distance", "max_distance"))
    return "score threshold", (
        f"A face is named when its distance to the person's centroid minus {margin:g} x its "
        f"distance to the next person's (counted as at most {far:g}) is at most this, and "
        f"the distance itself at most {most:g}; lower is surer."
    )


@router.get("/models/{version}")
def version(version: int, request: Request) -> Response:
    auth.current(request)
    c = console_of(request)
    try:
        info = _memo(c, f"registry:version:{version}", lambda: reg.resolve_version(c.ws, version))
    except FacefleetError as exc:
        raise HTTPException(404, str(exc)) from None
    manifest = _manifest(c, info)
    history = [e for e in reversed(reg.audit_log(c.ws)) if e.get("to_version") == info.version]
    pairs = _memo(c, f"registry:lookalikes:{info.version}", lambda: lookalikes.of_version(c.ws, info)) or []
    return c.render(
        request,
        "version.html",
        info=info,
        summary=summary_metrics(info.metrics),
        estimate=far_line(info.metrics) if "far_trials" in info.metrics else None,
        thresholds=sorted((manifest.get("thresholds") or {}).items()),
        threshold_rule=threshold_rule(manifest.get("open_set") or {}),
        plots=_plots(c, info),
        aliases=reg.ALIASES,
        history=history,
        **_as_the_store_has_it(c, pairs),
    )


def _as_the_store_has_it(c: Any, pairs: list[lookalikes.LookAlike]) -> dict[str, Any]:
    """The look-alikes as the store has them now: ``lookalikes`` marked accepted or not, the
    ``shown`` faces still held (a face removed since training gets no thumbnail), and the
    ``person_ids`` of their people still enrolled under those names (a link to the person's
    page, where two names of one person are merged)."""
    if not pairs:
        return {"lookalikes": [], "shown": set(), "person_ids": {}}
    ids = {f for la in pairs for f in (la.face, la.other_face) if f is not None}
    with c.store() as st:
        faces = {f.id for f in st.faces_by_id(ids)}
        people = {p.name: p.id for p in st.people()}
        accepted = lookalikes.accepted_pairs(st)
    names = {n for la in pairs for n in (la.person, la.taken_for)}
    return {
        "lookalikes": lookalikes.mark_accepted(pairs, accepted),
        "shown": faces,
        "person_ids": {n: people[n] for n in names if n in people},
    }


@router.post("/lookalikes/accept")
async def accept_lookalike(request: Request) -> Response:
    """Two people the model takes for one another, compared and found to be two people (or,
    with ``undo``, not any more)."""
    session = await writer(request, "reviewer")
    c = console_of(request)
    form = await request.form()
    person, other = str(form.get("person") or ""), str(form.get("other") or "")
    undo = bool(form.get("undo"))
    with c.store() as st:
        try:
            one, two = lookalikes.accept(st, person, other, by=f"{session.user.name} (console)", undo=undo)
        except FacefleetError as exc:
            raise HTTPException(400, str(exc)) from None
    version = str(form.get("version") or "")
    back = f"/models/{int(version)}" if version.isdigit() else "/models"
    what = "no longer accepted as two people" if undo else "accepted as two people"
    return c.back(back, msg=f"{one.name} and {two.name}: {what}")


def _why(form: Any) -> str:
    why = str(form.get("why") or "").strip()
    if not why:
        raise HTTPException(400, "a reason is required: say why (it goes into the audit log)")
    return why


@router.post("/models/promote")
async def promote(request: Request) -> Response:
    session = await writer(request, "admin")
    c = console_of(request)
    form = await request.form()
    why = _why(form)
    ref, alias = str(form.get("version") or ""), str(form.get("alias") or "")
    try:
        entry = reg.promote(c.ws, ref, alias, why=why, user=f"{session.user.name} (console)")
    except FacefleetError as exc:
        raise HTTPException(400, str(exc)) from None
    if entry is None:
        return c.back("/models", msg=f"@{alias} already points at v{ref}")
    return c.back(
        "/models", msg=f"@{entry['alias']} now v{entry['to_version']} (was v{entry['from_version']})"
    )


@router.post("/models/rollback")
async def rollback(request: Request) -> Response:
    session = await writer(request, "admin")
    c = console_of(request)
    form = await request.form()
    why = _why(form)
    try:
        entry = reg.rollback(
            c.ws, str(form.get("alias") or ""), why=why, user=f"{session.user.name} (console)"
        )
    except FacefleetError as exc:
        raise HTTPException(400, str(exc)) from None
    return c.back("/models", msg=f"@{entry['alias']} rolled back to v{entry['to_version']}")

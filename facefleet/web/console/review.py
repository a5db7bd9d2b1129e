"""Review: unknown-face clusters and curation candidates as thumbnail strips, best first.

Per cluster: name it (an existing person or a new one), "not <person>", discard, or keep as
strangers; picking faces first limits the action to them. A cluster that looks like a person
or another open cluster says so (``clusters.looks_like``), with that person's face beside it
and one-click "it is" / "not" buttons. The verdicts go through
``facefleet.curate.clusters`` and ``facefleet.curate.labels``, as ``facefleet clusters`` and
``facefleet label`` do.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from facefleet.curate import candidates as cand
from facefleet.curate import clusters as cl
from facefleet.curate import labels
from facefleet.errors import FacefleetError
from facefleet.web.console import auth
from facefleet.web.console.app import console_of, is_htmx, page_args, writer

router = APIRouter()
STRIP = 24  # thumbnails shown per cluster


def _card(
    info: cl.ClusterInfo, nots: dict[int, list[str]], looks: list[cl.LooksLike] | None = None
) -> dict[str, Any]:
    faces = sorted(info.faces, key=lambda f: (-cand.quality_score(f.quality), f.id))
    not_names = sorted({n for f in info.faces for n in nots.get(f.id, [])})
    return {
        "id": info.id,
        "size": len(info.faces),
        "faces": faces[:STRIP],
        "more": max(0, len(faces) - STRIP),
        "spread": info.spread,
        "devices": info.devices,
        "first_seen": info.first_seen,
        "last_seen": info.last_seen,
        "nots": not_names,
        "looks": looks or [],
    }


def _names(st: Any) -> list[str]:
    return [p.name for p in st.people()]


@router.get("/review")
def review(request: Request) -> Response:
    auth.current(request)
    c = console_of(request)
    tab = request.query_params.get("tab", "clusters")
    size = c.settings.page_size
    page, offset = page_args(request, size)
    emb = c.embedder_id()
    with c.store() as st:
        names = _names(st)
        if tab == "candidates":
            per = size * 4
            offset = (page - 1) * per
            found = _candidates(c, st, emb, offset + per + 1)[offset : offset + per]
            unnamed = [x for x in found if x.vector is not None and not x.meta.get("name")]
            near = _hints(c, st, emb).people_near([x.vector for x in unnamed])
            like = {x.face.id: hit for x, hit in zip(unnamed, near, strict=True) if hit}
            items = [x.as_dict() | {"face": x.face, "like": like.get(x.face.id)} for x in found]
            return c.render(
                request,
                "review.html",
                tab=tab,
                people=names,
                candidates=items,
                first=offset + 1,
                page=page,
                pages=page + 1 if len(found) > offset + per else page,
            )
        infos, total = cl.open_clusters_page(st, emb, offset=offset, limit=size)
        nots = cand.negatives_by_face(st)
        looks = _hints(c, st, emb).looks_like([i.id for i in infos], nots)
        cards = [_card(i, nots, looks.get(i.id)) for i in infos]
        strangers = _strangers_note(c, st, emb)
    return c.render(
        request,
        "review.html",
        tab="clusters",
        people=names,
        clusters=cards,
        strangers=strangers,
        total=total,
        page=page,
        pages=max(1, -(-total // size)),
    )


def _fingerprint(st: Any) -> tuple:
    """Changes whenever a verdict or a collection changes the candidates or their "not" names."""
    row = st.conn.execute(
        "SELECT COUNT(*), COALESCE(MAX(id), 0), (SELECT COUNT(*) FROM negatives), "
        "(SELECT COALESCE(MAX(id), 0) FROM faces) FROM faces WHERE status = 'candidate'"
    ).fetchone()
    return tuple(row)


def _strangers_note(c: Any, st: Any, emb: str) -> str:
    """``labels.reviewed_strangers_note`` with the grouping of the reviewed strangers (up to
    0.2 s) remembered until a verdict changes which faces are strangers."""
    key = (emb, *st.stranger_fingerprint(emb))
    reviewed = key[1]
    people = c.remember("stranger-people", key, lambda: labels.stranger_people(st, emb, reviewed))
    return labels.strangers_note(reviewed, labels.training_target(c.ws), people)


def _hints(c: Any, st: Any, emb: str) -> cl.HintIndex:
    """The clusters' and people's means and spreads, remembered until a face joins or leaves an
    open cluster or a person (the index's signature changes)."""
    key = cl.HintIndex.signature(st, emb)
    return c.remember("looks-like", key, lambda: cl.HintIndex.build(st, emb, key))


def _candidates(c: Any, st: Any, emb: str, limit: int) -> list[cand.Candidate]:
    """``list_candidates`` (the best ``limit``), remembered until the store's candidates change:
    ranking every collected face on each page view is the costly part of this page."""
    key = _fingerprint(st)
    with c.cache_lock:
        hit = c.cache.get("candidates")
    if hit and hit[0] == key and hit[1] >= limit:
        return hit[2][:limit]
    found = cand.list_candidates(st, emb, cand.Filters(), quality_cfg=c.ws.settings.quality, limit=limit)
    with c.cache_lock:
        c.cache["candidates"] = (key, limit, found)
    return found


def _picked(form: Any) -> list[int]:
    out = []
    for value in form.getlist("faces"):
        try:
            out.append(int(value))
        except (TypeError, ValueError):
            raise HTTPException(400, f"bad face id {value!r}") from None
    return out


def _after(request: Request, st: Any, emb: str, cid: int, message: str) -> Response:
    """The updated cluster card (htmx) or a redirect back to the review page."""
    c = console_of(request)
    if not is_htmx(request):
        return c.back("/review", msg=message)
    info = cl.cluster(st, emb, cid)
    card = None
    if info.state == "open" and info.faces:
        nots = cand.negatives_by_face(st)
        card = _card(info, nots, _hints(c, st, emb).looks_like([cid], nots).get(cid))
    return c.render(request, "_cluster.html", cl=card, cid=cid, done=message, people=_names(st))


@router.post("/review/clusters/{cid}/{action}")
async def cluster_action(cid: int, action: str, request: Request) -> Response:
    await writer(request, "reviewer")
    c = console_of(request)
    form = await request.form()
    picked = _picked(form)
    # "as": the person a "looks like" button names, else the typed name
    name = str(form.get("as") or form.get("name") or "").strip()
    emb = c.embedder_id()
    with c.store() as st:
        try:
            info = cl.cluster(st, emb, cid)
            open_ids = [f.id for f in info.faces]
            if picked and not set(picked) <= set(open_ids):
                raise HTTPException(
                    400, f"faces {sorted(set(picked) - set(open_ids))} are not open in cluster {cid}"
                )
            if action == "name":
                if not name:
                    raise HTTPException(400, "give a name to label the cluster with")
                exclude = [i for i in open_ids if picked and i not in picked]
                ids = cl.label_cluster(st, emb, cid, name, exclude=exclude)
                message = f"cluster {cid}: {len(ids)} face(s) named {name}"
            elif action == "not":
                if not name:
                    raise HTTPException(400, "say which person these faces are not")
                ids = labels.label_not(st, picked or open_ids, name)
                message = f"cluster {cid}: {len(ids)} face(s) marked not {name}"
            elif action == "discard":
                ids = labels.discard(st, picked) if picked else cl.reject_cluster(st, emb, cid)
                message = f"cluster {cid}: {len(ids)} face(s) discarded"
            elif action == "stranger":
                ids = (
                    labels.stranger(st, picked)
                    if picked
                    else cl.reject_cluster(st, emb, cid, as_stranger=True)
                )
                message = f"cluster {cid}: {len(ids)} face(s) kept as strangers"
            else:
                raise HTTPException(404, f"no cluster action {action!r}")
        except FacefleetError as exc:
            raise HTTPException(400, str(exc)) from None
        return _after(request, st, emb, cid, message)


@router.post("/review/faces")
async def faces_action(request: Request) -> Response:
    """Label, "not", discard or keep as strangers the faces picked on the candidates tab."""
    await writer(request, "reviewer")
    c = console_of(request)
    form = await request.form()
    picked = _picked(form)
    action = str(form.get("action") or "")
    name = str(form.get("name") or "").strip()
    if not picked:
        raise HTTPException(400, "pick at least one face first")
    with c.store() as st:
        try:
            if action == "name" and name:
                ids, what = labels.label(st, picked, name), f"named {name}"
            elif action == "not" and name:
                ids, what = labels.label_not(st, picked, name), f"marked not {name}"
            elif action == "discard":
                ids, what = labels.discard(st, picked), "discarded"
            elif action == "stranger":
                ids, what = labels.stranger(st, picked), "kept as strangers"
            else:
                raise HTTPException(400, "choose an action (and a name to name or 'not' faces)")
        except FacefleetError as exc:
            raise HTTPException(400, str(exc)) from None
    return c.back("/review", tab="candidates", msg=f"{len(ids)} face(s) {what}")

"""Events: recognitions and unknown captures from the cameras, newest first, with
thumbnails, filtered by device, person and time, paged (``facefleet.curate.events``)."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from facefleet.curate.events import EventFilter, event_devices, list_events
from facefleet.web.console import auth
from facefleet.web.console.app import console_of, page_args

router = APIRouter()
EVENTS_PAGE = 60


@router.get("/events")
def events(request: Request) -> Response:
    auth.current(request)
    c = console_of(request)
    q = request.query_params
    kind = q.get("kind") if q.get("kind") in ("known", "unknown") else None
    f = EventFilter(
        device=q.get("device") or None,
        person=(q.get("person") or "").strip() or None,
        since=q.get("since") or None,
        until=q.get("until") or None,
        kind=kind,
    )
    page, offset = page_args(request, EVENTS_PAGE)
    with c.store() as st:
        rows, total = list_events(st, f, offset=offset, limit=EVENTS_PAGE)
        devices = event_devices(st)
    keep = {k: v for k, v in f.__dict__.items() if v}
    return c.render(
        request,
        "events.html",
        rows=rows,
        total=total,
        f=f,
        devices=devices,
        page=page,
        pages=max(1, -(-total // EVENTS_PAGE)),
        query=urlencode(keep),
    )

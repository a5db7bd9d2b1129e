"""People: everyone enrolled, their photos and faces in use; enrol or add photos by upload
(``facefleet.enrol.enroll``, the same reasons as ``facefleet enroll``), remove a photo,
revoke a person; merge a person enrolled under two names into the other, and undo a merge
(``facefleet.store.merges``).

Uploads land in a temporary folder under ``cache/uploads/`` that is deleted afterwards; a
file that is not a readable image is refused before enrolment, so it writes nothing.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from facefleet import enrol
from facefleet.errors import FacefleetError, ImageError
from facefleet.store import merges
from facefleet.vision.image import load_image
from facefleet.web.console import auth, files
from facefleet.web.console.app import console_of, page_args, writer

router = APIRouter()
PEOPLE_PAGE = 50


@router.get("/people")
def people(request: Request) -> Response:
    auth.current(request)
    c = console_of(request)
    q = (request.query_params.get("q") or "").strip().lower()
    page, offset = page_args(request, PEOPLE_PAGE)
    with c.store() as st:
        counts = st.face_counts()
        everyone = [p for p in st.people() if not q or q in p.name.lower()]
    rows = [
        {
            "id": p.id,
            "name": p.name,
            "created": p.created,
            "in_use": counts.get(p.id, {}).get("in_use", 0),
            "selected": counts.get(p.id, {}).get("selected", 0),
            "revoked": counts.get(p.id, {}).get("revoked", 0),
        }
        for p in everyone
    ]
    total = len(rows)
    return c.render(
        request,
        "people.html",
        rows=rows[offset : offset + PEOPLE_PAGE],
        total=total,
        q=q,
        page=page,
        pages=max(1, -(-total // PEOPLE_PAGE)),
    )


@router.get("/people/{pid}")
def person(pid: str, request: Request) -> Response:
    auth.current(request)
    c = console_of(request)
    with c.store() as st:
        try:
            who = st.person(pid)
        except FacefleetError as exc:
            raise HTTPException(404, str(exc)) from None
        faces = st.faces(person=who.id)
        others = [p.name for p in st.people() if p.id != who.id]
        merged = merges.merges(st, held_by=who.id)
    return c.render(request, "person.html", person=who, faces=faces, other_names=others, merged=merged)


async def _save_uploads(c, form) -> tuple[Path, list[tuple[str, Path]], list[tuple[str, str]]]:
    """Uploaded files into a fresh temporary folder: ``(folder, [(original name, path)],
    [(original name, why refused)])``. Non-images are refused here."""
    folder = c.ws.cache_dir / "uploads" / secrets.token_hex(8)
    folder.mkdir(parents=True)
    saved, refused = [], []
    limit = c.settings.max_upload_bytes
    uploads = [u for u in form.getlist("photos") if isinstance(u, UploadFile) and u.filename]
    for i, up in enumerate(uploads):
        original = Path(up.filename.replace("\\", "/")).name or f"upload{i}"
        path = folder / files.safe_name(original, i)
        data = await up.read(limit + 1)
        if len(data) > limit:
            refused.append((original, f"larger than {c.settings.max_upload_mb:g} MB"))
            continue
        path.write_bytes(data)
        try:
            load_image(path)
        except ImageError as exc:
            refused.append((original, f"not an image: {str(exc).split(': ', 1)[-1]}"))
            path.unlink()
            continue
        saved.append((original, path))
    return folder, saved, refused


@router.post("/people/enrol")
async def enrol_upload(request: Request) -> Response:
    """Enrol a new person, or add photos to someone, from uploaded files."""
    await writer(request, "reviewer")
    c = console_of(request)
    form = await request.form()
    name = str(form.get("name") or "").strip()
    if not name:
        raise HTTPException(400, "give the person's name")
    folder, saved, refused = await _save_uploads(c, form)
    try:
        if not saved and not refused:
            raise HTTPException(400, "choose one or more photos to upload")
        outcomes = []
        if saved:
            try:
                report = enrol.enroll(
                    c.ws,
                    [(name, path) for _, path in saved],
                    largest=bool(form.get("largest")),
                    workers=1,
                    source="console",
                )
            except FacefleetError as exc:
                raise HTTPException(400, str(exc)) from None
            by_path = {str(path): original for original, path in saved}
            outcomes = [
                {"file": by_path.get(o.path, Path(o.path).name), "accepted": o.accepted, "reason": o.reason}
                for o in report.outcomes
            ]
        outcomes += [{"file": f, "accepted": False, "reason": why} for f, why in refused]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    with c.store() as st:
        who = st.find_person(name)
        faces = st.faces(person=who.id) if who else []
    accepted = sum(o["accepted"] for o in outcomes)
    return c.render(
        request,
        "person.html" if who else "people_result.html",
        person=who,
        name=name,
        faces=faces,
        outcomes=outcomes,
        accepted=accepted,
        status_code=200 if accepted else 422,
    )


@router.post("/people/{pid}/revoke")
async def revoke(pid: str, request: Request) -> Response:
    await writer(request, "reviewer")
    c = console_of(request)
    try:
        count = enrol.revoke_person(c.ws, pid)
    except FacefleetError as exc:
        raise HTTPException(400, str(exc)) from None
    return c.back(f"/people/{pid}", msg=f"revoked {count} face(s): they are no longer trained on")


@router.post("/people/{pid}/merge")
async def merge(pid: str, request: Request) -> Response:
    """One person enrolled under two names: this one's faces go to ``into``, this one goes."""
    await writer(request, "reviewer")
    c = console_of(request)
    into = str((await request.form()).get("into") or "").strip()
    if not into:
        raise HTTPException(400, "say whom to merge into")
    with c.store() as st:
        try:
            m = merges.merge(st, pid, into)
        except FacefleetError as exc:
            raise HTTPException(400, str(exc)) from None
    msg = f"merged {m.name} into {m.into_name}: {m.faces} face(s) moved (undo it below)"
    return c.back(f"/people/{m.into_id}", msg=msg)


@router.post("/merges/{mid}/undo")
async def unmerge(mid: int, request: Request) -> Response:
    """Take a merge back: the person that went is back with the faces it moved."""
    await writer(request, "reviewer")
    c = console_of(request)
    with c.store() as st:
        try:
            m = merges.unmerge(st, str(mid))
        except FacefleetError as exc:
            raise HTTPException(400, str(exc)) from None
    return c.back(f"/people/{m.person_id}", msg=f"{m.name} is back: {m.faces} face(s) moved back")


@router.post("/faces/{face_id}/remove")
async def remove_face(face_id: int, request: Request) -> Response:
    await writer(request, "reviewer")
    c = console_of(request)
    with c.store() as st:
        try:
            pid = st.face(face_id).person_id
        except FacefleetError as exc:
            raise HTTPException(404, str(exc)) from None
    enrol.remove_photo(c.ws, face_id)
    return c.back(f"/people/{pid}" if pid else "/people", msg=f"removed photo (face {face_id})")

"""Fleet: devices by inventory group with the version each runs, last heartbeat, FPS and
snapshot; the deployment history; starting a deployment of an alias to a group (admin) and
watching its per-host progress. Deployments run ``facefleet.fleet.deploy.deploy`` in a
background thread; the job page polls its state."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, Response

from facefleet.errors import FacefleetError
from facefleet.fleet import snapshots, status
from facefleet.registry.versions import ALIASES
from facefleet.web.console import auth
from facefleet.web.console.app import console_of, writer

router = APIRouter()


@dataclass
class Job:
    id: str
    alias: str
    group: str | None
    user: str
    started: float
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    state: str = "starting"  # starting | running | done | failed
    error: str | None = None
    version: int | None = None
    run_id: str | None = None
    finished: float | None = None


class Jobs:
    """Deployments started from the console (the newest 20 kept in memory)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()

    def inventory_path(self) -> Path:
        from facefleet.fleet.inventory import default_inventory_path

        return default_inventory_path(self.ws.root, self.ws.settings.fleet.inventory)

    def inventory(self) -> Any | None:
        from facefleet.fleet.inventory import load_inventory

        path = self.inventory_path()
        return load_inventory(path) if path.is_file() else None

    def start(self, alias: str, group: str | None, user: str) -> Job:
        from facefleet.fleet.catalog import resolve_bundle

        inventory = self.inventory()
        if inventory is None:
            raise FacefleetError(f"no inventory at {self.inventory_path()} (see docs/deployment.md)")
        bundle = resolve_bundle(self.ws, None, alias=alias)
        job = Job(secrets.token_hex(6), alias, group, user, time.time())
        with self.lock:
            self.jobs[job.id] = job
            for old in sorted(self.jobs.values(), key=lambda j: j.started)[:-20]:
                del self.jobs[old.id]
        threading.Thread(
            target=self._run, args=(job, inventory, bundle), name=f"deploy-{job.id}", daemon=True
        ).start()
        return job

    def _run(self, job: Job, inventory: Any, bundle: Path) -> None:
        from facefleet.fleet.deploy import deploy

        def progress(host: str, what: Any) -> None:
            with self.lock:
                if isinstance(what, str):
                    job.hosts[host] = {"state": what, "since": time.time()}
                else:
                    job.hosts[host] = {
                        "state": what.result,
                        "old": what.old,
                        "new": what.new,
                        "error": what.error,
                        "seconds": what.seconds,
                        "rolled_back": what.rolled_back,
                    }

        async def uploaded(host: Any, _tmp: str) -> None:
            with self.lock:
                job.hosts[host.name] = {"state": "uploaded, verifying", "since": time.time()}

        job.state = "running"
        try:
            report = deploy(
                self.ws,
                inventory,
                bundle,
                group=job.group,
                known_hosts=self.ws.settings.fleet.known_hosts,
                upload_hook=uploaded,
                progress=progress,
            )
            job.version, job.run_id = report.version, report.run_id
            job.state = "failed" if report.failed else "done"
        except FacefleetError as exc:
            job.state, job.error = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - shown on the job page, never lost
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
        job.finished = time.time()

    def get(self, job_id: str) -> Job:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no deployment job {job_id}")
        return job

    def recent(self) -> list[Job]:
        with self.lock:
            return sorted(self.jobs.values(), key=lambda j: -j.started)


def attach(console: Any) -> None:
    console.jobs = Jobs(console.ws)


def devices_by_group(rows: list[status.DeviceStatus], inventory: Any | None) -> list[tuple[str, list]]:
    """``[(group, [status rows])]``: inventory groups in order, then devices in none (pure)."""
    out: list[tuple[str, list]] = []
    placed: set[str] = set()
    if inventory is not None:
        for group, names in inventory.groups.items():
            if group == "all" and len(inventory.groups) > 1:
                continue  # Ansible's implicit group of everyone
            mine = [r for r in rows if r.host in names]
            placed.update(r.host for r in mine)
            out.append((group, mine))
    rest = [r for r in rows if r.host not in placed]
    if rest:
        out.append(("(not in the inventory)", rest))
    return out


@router.get("/fleet")
def fleet(request: Request) -> Response:
    auth.current(request)
    c = console_of(request)
    jobs: Jobs = c.jobs
    try:
        inventory = jobs.inventory()
        inv_error = None
    except FacefleetError as exc:
        inventory, inv_error = None, str(exc)
    hosts = list(inventory.hosts) if inventory else []
    rows = status.fleet_status(c.ws, hosts)
    snaps = {r.host: c.file_url(p) for r in rows if (p := snapshots.snapshot_path(c.ws, r.host))}
    return c.render(
        request,
        "fleet.html",
        groups=devices_by_group(rows, inventory),
        group_names=[g for g in inventory.groups if g != "all"] if inventory else [],
        has_inventory=inventory is not None,
        inv_error=inv_error,
        inventory_path=jobs.inventory_path(),
        history=status.history(c.ws, limit=50),
        snaps=snaps,
        aliases=ALIASES,
        jobs=jobs.recent()[:5],
    )


@router.get("/fleet/devices/{device}/snapshot.jpg")
def snapshot(device: str, request: Request) -> Response:
    auth.current(request)
    path = snapshots.snapshot_path(console_of(request).ws, device)
    if path is None:
        raise HTTPException(404, f"no snapshot from {device}")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "no-cache"})


@router.post("/fleet/deploy")
async def start_deploy(request: Request) -> Response:
    session = await writer(request, "admin")
    c = console_of(request)
    form = await request.form()
    alias = str(form.get("alias") or "production")
    group = str(form.get("group") or "") or None
    try:
        job = c.jobs.start(alias, group, session.user.name)
    except FacefleetError as exc:
        raise HTTPException(400, str(exc)) from None
    return c.back(f"/fleet/jobs/{job.id}")


@router.get("/fleet/jobs/{job_id}")
def job_page(job_id: str, request: Request) -> Response:
    auth.current(request)
    c = console_of(request)
    job = c.jobs.get(job_id)
    template = "_job.html" if request.headers.get("hx-request") == "true" else "job.html"
    return c.render(request, template, job=job)

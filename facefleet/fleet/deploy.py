"""Push deployment over SSH: one command puts a verified bundle on every device or none of it.

Per host, concurrently (asyncssh, key authentication only, host keys checked against
known_hosts): upload into a hidden temporary folder, check every sha256 on the device with
``sha256sum -c``, rename into ``<models_dir>/<model>/<version>/``, switch ``current``
atomically (``ln -s`` + ``mv -T``; ``previous`` keeps the old one), run the restart and health
commands; on any failure ``current`` goes back, the restart runs again and the host is marked
failed. The newest N versions stay on the device. Datasink hosts get ``facelist_<version>.csv``
and a ``facelist_current.csv`` symlink the same way. Only POSIX shell, coreutils and
sha256sum are needed on devices.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facefleet import layout
from facefleet.errors import BundleError, DeployError
from facefleet.fileio import sha256_file
from facefleet.fleet.inventory import Host, Inventory
from facefleet.layout import q
from facefleet.registry.format import SIGNED_FILES
from facefleet.registry.inference import verify_complete
from facefleet.ssh import SshTarget, connect, known_hosts_path
from facefleet.texttable import text_table

if TYPE_CHECKING:
    from facefleet.workspace import Workspace

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 120.0
FACELIST_CURRENT = "facelist_current.csv"

# Called after the upload, before verification: (host, remote temp path). For fault injection.
UploadHook = Callable[[Host, str], Awaitable[None] | None]
# Called as each host starts ("running") and ends (its HostResult): per-host progress.
Progress = Callable[[str, "str | HostResult"], None]


@dataclass
class HostResult:
    """One row of the summary table."""

    host: str
    kind: str
    old: int | None = None
    new: int | None = None
    result: str = "pending"  # ok | unchanged | failed | dry-run
    error: str | None = None
    seconds: float = 0.0
    rolled_back: bool = False
    steps: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result in ("ok", "unchanged", "dry-run")


@dataclass
class DeployReport:
    run_id: str
    model: str
    version: int
    name: str
    results: list[HostResult]

    @property
    def failed(self) -> list[HostResult]:
        return [r for r in self.results if not r.ok]


@dataclass
class Payload:
    """What one kind of host receives: files and their sha256 (manifest files included)."""

    kind: str  # bundle | facelist
    model: str
    version: int
    name: str
    files: dict[str, Path]
    sums: dict[str, str]


# -- small pure helpers -------------------------------------------------------------------


def format_version(version: int | None) -> str:
    return "-" if version is None else f"v{version}"


def summary_table(results: list[HostResult]) -> str:
    """The end-of-run table: host, old -> new, result, seconds."""
    rows = [("HOST", "KIND", "OLD -> NEW", "RESULT", "SECONDS")]
    for r in results:
        outcome = r.result if not r.error else f"{r.result}: {r.error}"
        if r.rolled_back:
            outcome += " (rolled back)"
        rows.append(
            (
                r.host,
                r.kind,
                f"{format_version(r.old)} -> {format_version(r.new)}",
                outcome,
                f"{r.seconds:.1f}",
            )
        )
    return text_table(rows)


def command_env(host: Host, payload: Payload) -> str:
    """Variables the restart/health commands see (exported in the remote shell)."""
    pairs = {
        "FACEFLEET_MODEL": payload.model,
        "FACEFLEET_VERSION": payload.version,
        "FACEFLEET_MODELS_DIR": host.models_dir,
        "FACEFLEET_HOST": host.name,
    }
    return " ".join(f"{k}={q(v)}" for k, v in pairs.items())


# -- payloads -----------------------------------------------------------------------------


def bundle_payload(bundle_dir: Path, public_key: Any | None) -> Payload:
    """The files of a verified, unpacked bundle."""
    manifest = verify_complete(bundle_dir, public_key)  # what the device will check
    files = {p.name: p for p in sorted(Path(bundle_dir).iterdir())}
    sums = dict(manifest["files"])
    for name in SIGNED_FILES:
        sums[name] = sha256_file(files[name])
    return Payload(
        "bundle", manifest["model"], int(manifest["version"]), str(manifest.get("name", "")), files, sums
    )


def facelist_payload(csv_path: Path, model: str, version: int, name: str) -> Payload:
    remote = f"facelist_{version}.csv"
    return Payload("facelist", model, version, name, {remote: csv_path}, {remote: sha256_file(csv_path)})


# -- SSH ----------------------------------------------------------------------------------


class Remote:
    """One SSH connection with a run-a-command helper that raises on failure."""

    def __init__(self, conn: Any, host: Host, steps: list[str]) -> None:
        self.conn, self.host, self.steps = conn, host, steps

    async def run(
        self,
        command: str,
        *,
        what: str,
        stdin: str | None = None,
        timeout: float = COMMAND_TIMEOUT,
        check: bool = True,
    ) -> str:
        self.steps.append(what)
        try:
            res = await asyncio.wait_for(self.conn.run(command, input=stdin, check=False), timeout=timeout)
        except asyncio.TimeoutError:
            raise DeployError(f"{what}: timed out after {timeout:.0f} s") from None
        if check and res.exit_status != 0:
            err = (str(res.stderr or "") or str(res.stdout or "")).strip().splitlines()
            detail = err[-1] if err else f"exit status {res.exit_status}"
            raise DeployError(f"{what} failed (exit {res.exit_status}): {detail}")
        return str(res.stdout or "")


# -- one host -----------------------------------------------------------------------------


async def _upload(remote: Remote, payload: Payload, tmp: str) -> None:
    remote.steps.append("upload")
    async with remote.conn.start_sftp_client() as sftp:
        for name, path in payload.files.items():
            await sftp.put(str(path), f"{tmp}/{name}")


async def _verify_remote(remote: Remote, payload: Payload, folder: str, names: list[str]) -> None:
    sums = "".join(f"{payload.sums[n]}  {n}\n" for n in sorted(names))
    await remote.run(
        f"cd {q(folder)} && sha256sum -c --quiet --strict -",
        stdin=sums,
        what="checksum verification on the device",
    )


async def _restart_and_check(remote: Remote, host: Host, payload: Payload) -> None:
    env = command_env(host, payload)
    if host.restart:
        await remote.run(f"export {env}; {host.restart}", what="restart command")
    if host.health:
        await remote.run(f"export {env}; {host.health}", what="health check")


async def _deploy_bundle(
    remote: Remote, host: Host, payload: Payload, res: HostResult, hook: UploadHook | None, dry_run: bool
) -> None:
    mdir = f"{host.models_dir.rstrip('/')}/{payload.model}"
    vdir = f"{mdir}/{payload.version}"
    out = await remote.run(
        layout.sh_read_links(mdir) + "; echo '|'; command -v sha256sum >/dev/null && echo ok",
        what="read the device state",
    )
    links, _, tools = out.rpartition("|")
    res.old, old_prev = layout.parse_links(links)
    tools = tools.strip()
    if tools != "ok":
        raise DeployError("sha256sum is not installed on the device")
    if dry_run:
        res.result = "dry-run"
        return
    if res.old == payload.version:
        names = sorted(payload.sums)
        await _verify_remote(remote, payload, vdir, names)
        res.result = "unchanged"
        return
    exists = (
        await remote.run(f"test -d {q(vdir)} && echo yes || true", what="look for the version")
    ).strip() == "yes"
    tmp = None
    installed_now = False
    try:
        if exists:
            try:
                await _verify_remote(remote, payload, vdir, sorted(payload.sums))
            except DeployError:
                exists = False
                await remote.run(f"rm -rf {q(vdir)}", what="remove a damaged copy")
        if not exists:
            tmp = (
                await remote.run(layout.sh_make_tmp(mdir, payload.version), what="create the upload folder")
            ).strip()
            await _upload(remote, payload, tmp)
            if hook is not None:
                maybe = hook(host, tmp)
                if asyncio.iscoroutine(maybe):
                    await maybe
            listed = await remote.run(f"ls -A {q(tmp)}", what="list the upload")
            extra = set(listed.split()) - set(payload.sums)
            if extra:
                raise DeployError(f"unexpected files in the upload: {', '.join(sorted(extra))}")
            await _verify_remote(remote, payload, tmp, sorted(payload.sums))
            await remote.run(f"mv -T {q(tmp)} {q(vdir)}", what="move the version into place")
            tmp, installed_now = None, True
        try:
            await _switch(remote, mdir, layout.CURRENT, payload.version)
            if res.old is not None:
                await _switch(remote, mdir, layout.PREVIOUS, res.old)
            await _restart_and_check(remote, host, payload)
        except DeployError:
            await _roll_back(remote, host, payload, mdir, res, old_prev, installed_now)
            raise
        await _prune(remote, mdir, host.keep)
        res.result = "ok"
    finally:
        if tmp:
            with contextlib.suppress(Exception):
                await remote.run(f"rm -rf {q(tmp)}", what="remove the upload folder")


async def _switch(remote: Remote, folder: str, link: str, target: int | str | None) -> None:
    what = f"remove {link}" if target is None else f"switch {link}"
    await remote.run(layout.sh_set_link(folder, link, target), what=what)


async def _roll_back(
    remote: Remote,
    host: Host,
    payload: Payload,
    mdir: str,
    res: HostResult,
    old_prev: int | None,
    installed_now: bool,
) -> None:
    # Errors here are logged, not raised: the host is failed either way and the first
    # error is the one worth reporting.
    try:
        await _switch(remote, mdir, layout.CURRENT, res.old)
        await _switch(remote, mdir, layout.PREVIOUS, old_prev)
        res.rolled_back = True
        if installed_now:
            await remote.run(
                f"rm -rf {q(mdir + '/' + str(payload.version))}", what="remove the failed version"
            )
        if host.restart and res.old is not None:
            await remote.run(
                f"export {command_env(host, payload)}; {host.restart}", what="restart after rollback"
            )
    except DeployError as exc:
        log.error("%s: rollback incomplete: %s", host.name, exc)
        res.steps.append(f"rollback incomplete: {exc}")


async def _prune(remote: Remote, mdir: str, keep: int) -> None:
    out = await remote.run(layout.sh_list(mdir), what="list versions")
    doomed = layout.prune_from_listing(out, keep)
    if doomed:
        await remote.run(layout.sh_remove(mdir, doomed), what="prune old versions")


async def _deploy_facelist(
    remote: Remote, host: Host, payload: Payload, res: HostResult, hook: UploadHook | None, dry_run: bool
) -> None:
    mdir = host.models_dir.rstrip("/")
    (name,) = payload.files
    cur = (
        await remote.run(f"readlink {q(mdir + '/' + FACELIST_CURRENT)} || true", what="read the device state")
    ).strip()
    digits = cur.removeprefix("facelist_").removesuffix(".csv")
    res.old = int(digits) if digits.isdigit() else None
    if dry_run:
        res.result = "dry-run"
        return
    tmp = (await remote.run(layout.sh_make_tmp(mdir, "facelist"), what="create the upload folder")).strip()
    try:
        await _upload(remote, payload, tmp)
        if hook is not None:
            maybe = hook(host, tmp)
            if asyncio.iscoroutine(maybe):
                await maybe
        await _verify_remote(remote, payload, tmp, [name])
        await remote.run(
            f"mv -f {q(tmp + '/' + name)} {q(mdir + '/' + name)}", what="move the facelist into place"
        )
        await _switch(remote, mdir, FACELIST_CURRENT, name)
        try:
            await _restart_and_check(remote, host, payload)
        except DeployError:
            res.rolled_back = True
            await _switch(remote, mdir, FACELIST_CURRENT, cur or None)
            if host.restart and cur:
                with contextlib.suppress(DeployError):
                    await remote.run(
                        f"export {command_env(host, payload)}; {host.restart}", what="restart after rollback"
                    )
            raise
        listing = (await remote.run(f"cd {q(mdir)} && ls -1A", what="list facelists")).split()
        versions = [
            n.removeprefix("facelist_").removesuffix(".csv")
            for n in listing
            if n.startswith("facelist_") and n.endswith(".csv") and n != FACELIST_CURRENT
        ]
        protect = [payload.version, res.old]
        doomed = layout.versions_to_prune(layout.version_dirs(versions), host.keep, protect)
        if doomed:
            await remote.run(
                f"cd {q(mdir)} && rm -f " + " ".join(q(f"facelist_{v}.csv") for v in doomed),
                what="prune old facelists",
            )
        res.result = "ok"
    finally:
        with contextlib.suppress(Exception):
            await remote.run(f"rm -rf {q(tmp)}", what="remove the upload folder")


async def deploy_host(
    host: Host,
    payload: Payload,
    *,
    known_hosts: Path,
    accept_new: bool,
    lock: asyncio.Lock,
    hook: UploadHook | None = None,
    dry_run: bool = False,
) -> HostResult:
    """Deploy ``payload`` to one host; never raises (the result says what happened)."""
    import asyncssh

    res = HostResult(host=host.name, kind=payload.kind, new=payload.version)
    start = time.monotonic()
    try:
        conn = await connect(SshTarget.of(host), known_hosts, accept_new=accept_new, lock=lock)
        async with conn:
            remote = Remote(conn, host, res.steps)
            if payload.kind == "bundle":
                await _deploy_bundle(remote, host, payload, res, hook, dry_run)
            else:
                await _deploy_facelist(remote, host, payload, res, hook, dry_run)
    except (DeployError, BundleError) as exc:
        res.result, res.error = "failed", str(exc)
    except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
        reason = str(exc) or type(exc).__name__
        res.result, res.error = "failed", f"ssh: {reason}"
    except Exception as exc:  # noqa: BLE001 - one host's surprise must not stop the others
        log.exception("unexpected error deploying to %s", host.name)
        res.result, res.error = "failed", f"{type(exc).__name__}: {exc}"
    res.seconds = time.monotonic() - start
    return res


async def deploy_hosts(
    hosts: list[Host],
    payloads: dict[str, Payload],
    *,
    parallel: int,
    known_hosts: Path,
    accept_new: bool,
    hook: UploadHook | None,
    dry_run: bool,
    progress: Progress | None = None,
) -> list[HostResult]:
    """Deploy to ``hosts`` with at most ``parallel`` at a time; results in host order."""
    if parallel < 1:
        raise DeployError(f"--parallel must be at least 1, got {parallel}")
    sem, lock = asyncio.Semaphore(parallel), asyncio.Lock()

    async def one(host: Host) -> HostResult:
        async with sem:
            if progress is not None:
                progress(host.name, "running")
            res = await deploy_host(
                host,
                payloads[host.receives],
                known_hosts=known_hosts,
                accept_new=accept_new,
                lock=lock,
                hook=hook,
                dry_run=dry_run,
            )
            if progress is not None:
                progress(host.name, res)
            return res

    return list(await asyncio.gather(*(one(h) for h in hosts)))


# -- the whole deployment -----------------------------------------------------------------


def _public_key(ws: Workspace, path: Path | None) -> Any:
    from facefleet.registry.keys import load_public_key, public_key_path

    key_path = path or public_key_path(ws.keys_dir)
    if not Path(key_path).is_file():
        raise BundleError(
            f"no public key at {key_path}: bundles are verified before they are pushed "
            "(create keys with 'facefleet keys init' or pass --public-key)"
        )
    return load_public_key(Path(key_path))


def _record(ws: Workspace, report: DeployReport) -> None:
    from facefleet.fleet import records

    store = records.open_store(ws)
    try:
        for r in report.results:
            if r.result == "dry-run":
                continue
            records.record_deployment(
                store,
                report.run_id,
                {
                    "host": r.host,
                    "model": report.model,
                    "old_version": r.old,
                    "new_version": report.version,
                    "result": r.result,
                    "error": r.error,
                    "seconds": r.seconds,
                    "method": f"ssh-{r.kind}",
                },
            )
    finally:
        store.close()
    _tag_mlflow(ws, report)


def _tag_mlflow(ws: Workspace, report: DeployReport) -> None:
    """Tag the model version with where it runs, when the workspace has an MLflow registry."""
    configured = ws.configured_tracking_uri
    if not configured and not (Path(ws.root) / "mlflow.db").exists():
        return
    try:
        from facefleet.registry.tracking import configure

        client = configure(ws)
        ok = sorted(r.host for r in report.results if r.result in ("ok", "unchanged"))
        failed = sorted(r.host for r in report.results if r.result == "failed")
        version = str(report.version)
        client.set_model_version_tag(report.model, version, "deployed.hosts", ",".join(ok))
        client.set_model_version_tag(report.model, version, "deployed.failed", ",".join(failed))
        client.set_model_version_tag(report.model, version, "deployed.run", report.run_id)
        client.set_model_version_tag(
            report.model, version, "deployed.at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        )
    except Exception as exc:  # noqa: BLE001 - MLflow down must not fail a finished deployment
        log.warning("could not tag the MLflow model version: %s", exc)


def deploy(
    ws: Workspace,
    inventory: Inventory,
    bundle: Path,
    *,
    group: str | None = None,
    host: str | None = None,
    parallel: int = 4,
    dry_run: bool = False,
    known_hosts: Path | str | None = None,
    accept_new_host_keys: bool = False,
    public_key_path: Path | None = None,
    upload_hook: UploadHook | None = None,
    record: bool = True,
    progress: Progress | None = None,
) -> DeployReport:
    """Verify ``bundle`` locally, then push it to the inventory's hosts for its model."""
    key = _public_key(ws, public_key_path)
    with tempfile.TemporaryDirectory(prefix="facefleet-deploy-") as tmp:
        bundle = Path(bundle)
        if bundle.is_file():
            from facefleet.registry.format import unpack_bundle

            bundle = unpack_bundle(bundle, Path(tmp) / "bundle")
        payload = bundle_payload(bundle, key)
        hosts = inventory.select(payload.model, group=group, host=host)
        if not hosts:
            raise DeployError(f"no hosts in {inventory.path} receive {payload.model}")
        payloads = {"bundle": payload}
        if any(h.receives == "facelist" for h in hosts):
            from facefleet.fleet.facelist import write_facelist

            csv_path = Path(tmp) / f"facelist_{payload.version}.csv"
            write_facelist(ws, csv_path)
            payloads["facelist"] = facelist_payload(csv_path, payload.model, payload.version, payload.name)
        results = asyncio.run(
            deploy_hosts(
                hosts,
                payloads,
                parallel=parallel,
                known_hosts=known_hosts_path(known_hosts),
                accept_new=accept_new_host_keys,
                hook=upload_hook,
                dry_run=dry_run,
                progress=progress,
            )
        )
    report = DeployReport(uuid.uuid4().hex[:12], payload.model, payload.version, payload.name, results)
    if record and not dry_run:
        _record(ws, report)
    return report


def print_report(report: DeployReport, out: Any = None) -> None:
    out = out or sys.stdout
    label = f"{report.model} v{report.version}" + (f" ({report.name})" if report.name else "")
    print(f"deployment {report.run_id}: {label}", file=out)
    print(summary_table(report.results), file=out)
    failed = report.failed
    if failed:
        print(
            f"{len(failed)} of {len(report.results)} host(s) failed: " + ", ".join(r.host for r in failed),
            file=out,
        )

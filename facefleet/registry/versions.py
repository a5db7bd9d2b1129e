"""Model versions and aliases in the MLflow registry, their audit log, and ``versions.yaml``.

Owns: resolving a version reference (number, ``@alias``, human name), moving the aliases
``production`` / ``validated`` / ``experimental``, the append-only audit log of those moves
(MLflow keeps no history of aliases; ``registry_audit.jsonl`` in the workspace does), rollback
from that log, side-by-side diffs of two versions, and the exported ``versions.yaml``.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from facefleet.clock import now_iso
from facefleet.fileio import atomic_write_text
from facefleet.registry.catalog import (
    BUNDLE_TAG,
    COMPLETE,  # noqa: F401 - re-exported: the tags training sets live with the catalog
    PENDING,
    MlflowCatalog,
    VersionError,
    model_name,
    resolve_in,
)
from facefleet.registry.catalog import parse_ref as parse_any_ref

if TYPE_CHECKING:  # pragma: no cover
    from mlflow.tracking import MlflowClient

    from facefleet.workspace import Workspace

ALIASES = ("production", "validated", "experimental")
AUDIT_NAME = "registry_audit.jsonl"
VERSIONS_NAME = "versions.yaml"
ACCURACY_KEYS = ("accuracy", "val_accuracy", "test_accuracy", "eval_accuracy", "cv_accuracy")


@dataclass
class ModelVersionInfo:
    """One registered model version, with its run's params and metrics."""

    model: str
    version: int
    name: str
    aliases: list[str]
    run_id: str | None
    created: str
    source: str
    description: str
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``v3 (gamma4)``: how versions are shown to people."""
        return f"v{self.version} ({self.name})" if self.name else f"v{self.version}"

    @property
    def accuracy(self) -> float | None:
        return accuracy_of(self.metrics)


# -- small pure helpers -------------------------------------------------------------------


def accuracy_of(metrics: dict[str, float]) -> float | None:
    """The accuracy metric under whichever common key the training run used."""
    for key in ACCURACY_KEYS:
        if key in metrics:
            return float(metrics[key])
    return None


def parse_ref(ref: str | int) -> tuple[str, str | int]:
    """Classify a reference: ``("version", 3)``, ``("alias", "production")``, ``("name", ...)``;
    only the known aliases are accepted."""
    kind, value = parse_any_ref(ref)
    if kind == "alias" and value not in ALIASES:
        raise VersionError(f"unknown alias {str(ref).strip()!r}: expected one of @{', @'.join(ALIASES)}")
    return kind, value


def check_alias(alias: str) -> str:
    alias = alias.lstrip("@")
    if alias not in ALIASES:
        raise VersionError(f"unknown alias {alias!r}: expected one of {', '.join(ALIASES)}")
    return alias


def current_user() -> str:
    """``user@host`` of whoever runs this process."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        user = os.environ.get("USER") or f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def alias_stack(entries: list[dict[str, Any]], alias: str) -> list[int]:
    """Replay the audit log for ``alias``: the holders in order, the current one last.

    A promote pushes its target; a rollback pops the top.
    """
    stack: list[int] = []
    for entry in entries:
        if entry.get("alias") != alias:
            continue
        if entry.get("action") == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != entry["to_version"]:
                stack.append(int(entry["to_version"]))
            continue
        prev = entry.get("from_version")
        if prev is not None and (not stack or stack[-1] != prev):
            stack.append(int(prev))
        stack.append(int(entry["to_version"]))
    return stack


def diff_mappings(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any, bool]]:
    """Rows ``(key, value in a, value in b, changed)`` over the union of keys, sorted."""
    rows = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        rows.append((key, va, vb, va != vb))
    return rows


def diff_labels(a: list[str], b: list[str]) -> tuple[list[str], list[str]]:
    """Labels ``(removed, added)`` going from ``a`` to ``b``."""
    return sorted(set(a) - set(b)), sorted(set(b) - set(a))


# -- MLflow access --------------------------------------------------------------------------


def _client(ws: Workspace) -> MlflowClient:
    from facefleet.registry.tracking import configure

    return configure(ws)


def _registered_aliases(client: MlflowClient, model: str) -> dict[str, int]:
    from mlflow.exceptions import MlflowException

    try:
        reg = client.get_registered_model(model)
    except MlflowException:
        raise VersionError(f"no registered model {model!r} yet: train one with 'facefleet train'") from None
    return {alias: int(v) for alias, v in (reg.aliases or {}).items()}


def _info(client: MlflowClient, mv: Any, aliases: dict[str, int]) -> ModelVersionInfo:
    version = int(mv.version)
    params: dict[str, str] = {}
    metrics: dict[str, float] = {}
    if mv.run_id:
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):
            run = client.get_run(mv.run_id)
            params = dict(run.data.params)
            metrics = {k: float(v) for k, v in run.data.metrics.items()}
    created = datetime.fromtimestamp((mv.creation_timestamp or 0) / 1000, tz=timezone.utc)
    tags = dict(mv.tags or {})
    return ModelVersionInfo(
        model=mv.name,
        version=version,
        name=tags.get("name", ""),
        aliases=sorted(a for a, v in aliases.items() if v == version),
        run_id=mv.run_id or None,
        created=created.isoformat(timespec="seconds"),
        source=mv.source or "",
        description=mv.description or "",
        tags=tags,
        params=params,
        metrics=metrics,
    )


def _all_model_versions(client: MlflowClient, model: str) -> list[Any]:
    out: list[Any] = []
    token = None
    for _ in range(10_000):  # bounded paging
        page = client.search_model_versions(f"name='{model}'", page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            break
    return out


def list_versions(ws: Workspace) -> list[ModelVersionInfo]:
    """Every version of the workspace's model, newest first."""
    client = _client(ws)
    model = model_name(ws)
    aliases = _registered_aliases(client, model)
    infos = [_info(client, mv, aliases) for mv in _all_model_versions(client, model)]
    return sorted(infos, key=lambda i: i.version, reverse=True)


def resolve_version(ws: Workspace, ref: str | int) -> ModelVersionInfo:
    """The registered version a reference names: ``3``, ``v3``, ``@production`` or a human
    name (resolved by ``facefleet.registry.catalog``, in the MLflow registry only)."""
    parse_ref(ref)  # only the known aliases
    client = _client(ws)
    model = model_name(ws)
    aliases = _registered_aliases(client, model)
    version, _ = resolve_in(MlflowCatalog(ws, model, client), ref)
    return _info(client, client.get_model_version(model, str(version)), aliases)


# -- the audit log --------------------------------------------------------------------------


def audit_path(ws: Workspace) -> Path:
    return ws.root / AUDIT_NAME


def audit_log(ws: Workspace, alias: str | None = None) -> list[dict[str, Any]]:
    """Every alias move recorded in this workspace, oldest first (optionally for one alias).

    A torn last line (a crash mid-append) is skipped, never fatal.
    """
    path = audit_path(ws)
    if not path.exists():
        return []
    model = model_name(ws)
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(entry, dict) or entry.get("model", model) != model:
            continue
        if alias is None or entry.get("alias") == alias:
            entries.append(entry)
    return entries


def _append_audit(ws: Workspace, entry: dict[str, Any]) -> None:
    # One write of one line with O_APPEND: concurrent writers never interleave within a line.
    data = (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(audit_path(ws), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(ws: Workspace) -> Iterator[None]:
    """Serialise alias moves between processes (read holder, move, log as one step)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    with open(ws.root / ".registry.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _move(
    ws: Workspace,
    alias: str,
    target: ModelVersionInfo,
    previous: int | None,
    *,
    action: str,
    why: str,
    user: str | None,
) -> dict[str, Any]:
    client = _client(ws)
    client.set_registered_model_alias(target.model, alias, str(target.version))
    entry = {
        "ts": now_iso(),
        "user": user or current_user(),
        "model": target.model,
        "alias": alias,
        "action": action,
        "from_version": previous,
        "to_version": target.version,
        "to_name": target.name,
        "why": why,
    }
    _append_audit(ws, entry)
    return entry


def promote(
    ws: Workspace, ref: str | int, alias: str, why: str = "", user: str | None = None
) -> dict[str, Any] | None:
    """Point ``alias`` at the version ``ref`` names; log the move; rewrite ``versions.yaml``.

    Returns the audit entry, or None when the alias already pointed there.
    """
    alias = check_alias(alias)
    target = resolve_version(ws, ref)
    check_promotable(ws, target)
    with _locked(ws):
        client = _client(ws)
        repair(ws)
        previous = _registered_aliases(client, target.model).get(alias)
        if previous == target.version:
            return None
        entry = _move(ws, alias, target, previous, action="promote", why=why, user=user)
        write_versions_yaml(ws)
    return entry


def check_promotable(ws: Workspace, info: ModelVersionInfo) -> None:
    """Refuse a version whose training never finished, or whose bundle is missing or does not
    verify: an alias must never name something a device could not load."""
    from facefleet.errors import BundleError
    from facefleet.registry.format import MANIFEST
    from facefleet.registry.inference import load_bundle
    from facefleet.registry.keys import load_public_key, public_key_path

    label = f"v{info.version}"
    if info.tags.get(BUNDLE_TAG) == PENDING:
        raise VersionError(
            f"{label} is incomplete: its training stopped before the bundle was written "
            "(the next 'facefleet train' removes it)"
        )
    key_path = public_key_path(ws.keys_dir)
    if not key_path.is_file():
        raise VersionError(f"cannot verify {label}: no {key_path.name} in the workspace's keys folder")
    local = ws.models_dir / info.model / str(info.version)
    with tempfile.TemporaryDirectory(prefix="facefleet-verify-") as tmp:
        path = local if (local / MANIFEST).is_file() else _download_bundle(ws, info, Path(tmp))
        if path is None:
            raise VersionError(f"{label} has no bundle (not in models/ nor in its run's artifacts)")
        try:
            load_bundle(path, load_public_key(key_path))
        except BundleError as exc:
            reason = str(exc).replace(f"{path}: ", "").replace(str(path), "the bundle")
            raise VersionError(f"{label}'s bundle does not verify: {reason}") from None


def _download_bundle(ws: Workspace, info: ModelVersionInfo, dest: Path) -> Path | None:
    from mlflow.exceptions import MlflowException

    from facefleet.registry.format import MANIFEST

    if not info.run_id:
        return None
    try:
        got = Path(_client(ws).download_artifacts(info.run_id, "bundle", str(dest)))
    except (MlflowException, OSError):
        return None
    return got if (got / MANIFEST).is_file() else None


def repair(ws: Workspace) -> list[dict[str, Any]]:
    """Bring the audit log back in line with the registry after an interrupted move (alias set,
    process killed before its audit line): one ``repair`` entry per alias whose holder differs
    from the last one logged. Call under ``_locked``. Returns the entries added."""
    client = _client(ws)
    model = model_name(ws)
    try:
        held = _registered_aliases(client, model)
    except VersionError:
        return []
    entries = audit_log(ws)
    added = []
    for alias, version in sorted(held.items()):
        logged = [e for e in entries if e.get("alias") == alias]
        if logged and logged[-1].get("to_version") == version:
            continue
        if not logged and alias == "experimental":
            continue  # set by training outside the log before the log existed
        entry = {
            "ts": now_iso(),
            "user": current_user(),
            "model": model,
            "alias": alias,
            "action": "repair",
            "from_version": logged[-1].get("to_version") if logged else None,
            "to_version": version,
            "to_name": "",
            "why": "the registry moved without an audit entry (an interrupted promote)",
        }
        _append_audit(ws, entry)
        added.append(entry)
    return added


def rollback(ws: Workspace, alias: str, why: str = "", user: str | None = None) -> dict[str, Any]:
    """Move ``alias`` back to the version that held it before, from the audit log."""
    from mlflow.exceptions import MlflowException

    alias = check_alias(alias)
    with _locked(ws):
        client = _client(ws)
        repair(ws)
        model = model_name(ws)
        current = _registered_aliases(client, model).get(alias)
        stack = alias_stack(audit_log(ws), alias)
        if current is not None and stack and stack[-1] == current:
            stack.pop()
        # Versions deleted from the registry since are skipped.
        target: ModelVersionInfo | None = None
        while stack and target is None:
            candidate = stack.pop()
            if candidate == current:
                continue
            with contextlib.suppress(MlflowException, VersionError):
                target = resolve_version(ws, candidate)
        if target is None:
            held = f"v{current}" if current is not None else "nothing"
            raise VersionError(
                f"cannot roll back @{alias}: it holds {held} and the audit log records no earlier holder"
            )
        check_promotable(ws, target)
        entry = _move(ws, alias, target, current, action="rollback", why=why, user=user)
        write_versions_yaml(ws)
    return entry


# -- versions.yaml ---------------------------------------------------------------------------


def versions_summary(infos: list[ModelVersionInfo], entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``versions.yaml`` mapping from the versions and the audit log (pure).

    ``production`` is the current holder; ``validated`` lists every version that was ever
    validated or in production; ``experimental`` the rest, newest first.
    """
    reached: dict[int, set[str]] = {}
    last_move: dict[tuple[int, str], dict[str, Any]] = {}
    rolled_back: dict[int, dict[str, Any]] = {}
    for entry in entries:
        to = int(entry["to_version"])
        reached.setdefault(to, set()).add(entry["alias"])
        last_move[(to, entry["alias"])] = entry
        if entry.get("action") == "rollback" and entry.get("from_version") is not None:
            rolled_back[int(entry["from_version"])] = entry
    for info in infos:
        reached.setdefault(info.version, set()).update(info.aliases)

    def item(info: ModelVersionInfo, level: str) -> dict[str, Any]:
        move = last_move.get((info.version, level), {})
        notes = move.get("why") or info.description or ""
        rb = rolled_back.get(info.version)
        if rb is not None and level != "production":
            notes = (notes + "; " if notes else "") + f"rolled back from @{rb['alias']} {rb['ts']}"
        out: dict[str, Any] = {"version": info.version, "name": info.name}
        if level == "production":
            out["deployed"] = move.get("ts")
        else:
            out["created"] = info.created
        out["accuracy"] = info.accuracy
        out["notes"] = notes
        return out

    production = next((i for i in infos if "production" in i.aliases), None)
    validated, experimental = [], []
    for info in sorted(infos, key=lambda i: i.version, reverse=True):
        if info is production:
            continue
        if reached.get(info.version, set()) & {"validated", "production"}:
            validated.append(item(info, "validated"))
        else:
            experimental.append(item(info, "experimental"))
    return {
        "production": item(production, "production") if production else None,
        "validated": validated,
        "experimental": experimental,
    }


def versions_yaml_path(ws: Workspace) -> Path:
    return ws.root / VERSIONS_NAME


def write_versions_yaml(ws: Workspace, path: Path | None = None) -> Path:
    """Write ``versions.yaml`` (atomically) from the registry and the audit log."""
    try:
        infos = list_versions(ws)
    except VersionError:
        infos = []
    data = versions_summary(infos, audit_log(ws))
    path = Path(path) if path else versions_yaml_path(ws)
    header = "# Written by facefleet from the MLflow registry and the audit log; do not edit.\n"
    atomic_write_text(path, header + yaml.safe_dump(data, sort_keys=False))
    return path


# -- diff ------------------------------------------------------------------------------------


def bundle_manifest(ws: Workspace, info: ModelVersionInfo) -> dict[str, Any] | None:
    """The bundle manifest of a version (labels, thresholds): the workspace's own copy of the
    bundle when it names the same run, else the one logged with the run."""
    local = Path(ws.models_dir) / info.model / str(info.version) / "manifest.json"
    try:
        data = json.loads(local.read_text(encoding="utf-8"))
        if isinstance(data, dict) and info.run_id and data.get("run_id") == info.run_id:
            return data
    except (OSError, ValueError):
        pass
    if not info.run_id:
        return None
    from mlflow.exceptions import MlflowException

    client = _client(ws)
    found: str | None = None
    pending: list[str | None] = [None]
    for _ in range(50):  # bounded walk over the run's artifact folders
        if not pending or found:
            break
        folder = pending.pop(0)
        try:
            items = client.list_artifacts(info.run_id, folder)
        except (MlflowException, OSError):
            return None
        for fi in items:
            if fi.is_dir:
                pending.append(fi.path)
            elif fi.path.rsplit("/", 1)[-1] == "manifest.json":
                found = fi.path
                break
    if not found:
        return None
    data = _artifact_json(client, info.run_id, found)
    return data if isinstance(data, dict) else None


def _artifact_json(client: Any, run_id: str, path: str) -> Any:
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
            return json.loads(Path(local).read_text(encoding="utf-8"))
        except (MlflowException, OSError, ValueError):
            return None


def run_json(ws: Workspace, info: ModelVersionInfo, path: str) -> Any:
    """A JSON artifact of the version's training run (``None`` when the run has none, e.g. it
    was trained before that artifact existed)."""
    return _artifact_json(_client(ws), info.run_id, path) if info.run_id else None


@dataclass
class VersionDiff:
    a: ModelVersionInfo
    b: ModelVersionInfo
    params: list[tuple[str, Any, Any, bool]]
    metrics: list[tuple[str, Any, Any, bool]]
    labels_removed: list[str]
    labels_added: list[str]
    thresholds: list[tuple[str, Any, Any, bool]]


def diff(ws: Workspace, ref_a: str | int, ref_b: str | int) -> VersionDiff:
    """Params, metrics, labels and per-person thresholds of two versions side by side."""
    a, b = resolve_version(ws, ref_a), resolve_version(ws, ref_b)
    ma, mb = bundle_manifest(ws, a) or {}, bundle_manifest(ws, b) or {}
    removed, added = diff_labels(list(ma.get("labels") or []), list(mb.get("labels") or []))
    return VersionDiff(
        a=a,
        b=b,
        params=diff_mappings(a.params, b.params),
        metrics=diff_mappings(a.metrics, b.metrics),
        labels_removed=removed,
        labels_added=added,
        thresholds=diff_mappings(ma.get("thresholds") or {}, mb.get("thresholds") or {}),
    )

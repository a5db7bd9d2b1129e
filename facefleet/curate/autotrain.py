"""Autotrain: the unattended loop. When faces were labelled since the last run (or always
with ``force``): selected faces become ``in_use``, train (the version is registered as
``@experimental``), validate against production, then promote on a pass or flag the version
for review. One run at a time per workspace: an ``fcntl`` lock on ``.autotrain.lock``; a
second run waits up to ``wait`` seconds and then exits cleanly saying who holds the lock.
Every step is one line in ``autotrain.log`` (and on the console).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from facefleet.clock import now_iso
from facefleet.curate import labels
from facefleet.fileio import atomic_write_text
from facefleet.workspace import Workspace

log = logging.getLogger(__name__)

LOCK_NAME = ".autotrain.lock"
LOG_NAME = "autotrain.log"
STATE_NAME = "autotrain_state.json"


@dataclass
class AutotrainResult:
    state: str  # busy | nothing-new | promoted | needs-review
    version: int | None = None
    promoted: list[str] = field(default_factory=list)
    moved_to_in_use: int = 0
    lines: list[str] = field(default_factory=list)


class BusyError(Exception):
    """The lock is held by another run."""


@contextlib.contextmanager
def run_lock(ws: Workspace, wait: float = 0.0, poll: float = 0.2) -> Iterator[None]:
    """Hold the workspace's autotrain lock; raises ``BusyError`` after ``wait`` seconds."""
    import fcntl

    path = ws.root / LOCK_NAME
    with open(path, "a+") as fh:
        deadline = time.monotonic() + max(wait, 0.0)
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    fh.seek(0)
                    holder = fh.read().strip() or "another process"
                    raise BusyError(holder) from None
                time.sleep(poll)
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} since {now_iso()}\n")
            fh.flush()
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_state(ws: Workspace) -> dict[str, Any]:
    try:
        return json.loads((ws.root / STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def negatives_count(store) -> int:
    return int(store.conn.execute("SELECT COUNT(*) FROM negatives").fetchone()[0])


def has_news(selected: int, negatives: int, state: dict[str, Any]) -> bool:
    """New labels since the last run: selected faces, or negatives added."""
    return selected > 0 or negatives != int(state.get("negatives", 0))


def autotrain(
    ws: Workspace, *, force: bool = False, wait: float = 0.0, echo: Callable[[str], None] | None = None
) -> AutotrainResult:
    """One pass of the learning loop (see the module docstring)."""
    result = AutotrainResult(state="busy")

    def step(msg: str) -> None:
        line = f"{now_iso()} autotrain[{os.getpid()}]: {msg}"
        result.lines.append(line)
        log.info("%s", msg)
        with open(ws.root / LOG_NAME, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        if echo is not None:
            echo(line)

    try:
        with run_lock(ws, wait):
            _run(ws, force, step, result)
    except BusyError as exc:
        step(f"another autotrain holds the lock ({exc}); nothing done")
        result.state = "busy"
    return result


def _run(ws: Workspace, force: bool, step: Callable[[str], None], result: AutotrainResult) -> None:
    from facefleet.curate.validate import Policy, format_report, validate
    from facefleet.train.config import load_config
    from facefleet.train.pipeline import train

    state = read_state(ws)
    store = ws.open_store()
    try:
        selected = labels.selected_ids(store)
        negs = negatives_count(store)
    finally:
        store.close()
    step(f"check: {len(selected)} selected face(s), {negs} negative label(s)")
    if not force and not has_news(len(selected), negs, state):
        step("nothing new since the last run; no training (use --force to train anyway)")
        result.state = "nothing-new"
        return
    store = ws.open_store()
    try:
        moved = labels.promote_selected(store)
    finally:
        store.close()
    result.moved_to_in_use = len(moved)
    step(f"select: {len(moved)} selected face(s) now in_use")
    config = load_config(workspace_train=ws.settings.train or None)
    config.name = config.name or f"auto-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    try:
        trained = train(ws, config)
    except BaseException:
        store = ws.open_store()
        try:
            store.set_status(moved, "selected")  # nothing was trained on them after all
        finally:
            store.close()
        step("train: failed; faces put back to selected")
        raise
    result.version = trained.version
    step(
        f"train: {trained.model} v{trained.version} ({trained.name}), method "
        f"{trained.method}, registered as @experimental"
    )
    policy = Policy.from_config(ws.settings.validate)
    report = validate(ws, str(trained.version), promote=True, policy=policy)
    for line in format_report(report).splitlines():
        log.debug("%s", line)
    verdict = ", ".join(f"{c.name} {'ok' if c.ok else 'FAIL'}" for c in report.checks)
    step(f"validate: {'passed' if report.passed else 'failed'} ({verdict})")
    if report.passed:
        result.promoted = [e["alias"] for e in report.promoted]
        result.state = "promoted"
        step(
            "promote: v{} -> {}".format(
                trained.version, ", ".join(f"@{a}" for a in result.promoted) or "aliases already there"
            )
        )
    else:
        result.state = "needs-review"
        _flag(ws, trained.model, trained.version)
        step(
            f"review: v{trained.version} stays @experimental, flagged for review "
            f"(see 'facefleet validate {trained.version}')"
        )
    atomic_write_text(
        ws.root / STATE_NAME,
        json.dumps({"negatives": negs, "version": trained.version, "at": now_iso(), "state": result.state}),
    )


def _flag(ws: Workspace, model: str, version: int) -> None:
    try:
        from facefleet.registry.tracking import configure

        configure(ws).set_model_version_tag(model, str(version), "review", "needed")
    except Exception as exc:  # noqa: BLE001 - the log line still says it
        log.warning("could not tag v%s for review: %s", version, exc)

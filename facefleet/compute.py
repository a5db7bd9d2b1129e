"""Where the heavy server work runs: here (this process and its local pool) or on a Dask cluster.

Owns the ``compute`` settings (``compute.scheduler`` in ``facefleet.yaml`` or ``--scheduler``),
the one connected Dask client per scheduler address and process, the compute settings in
force for the current call (a context variable the library entry points set), mapping work
over the cluster with a bounded number of tasks in flight, retries and a progress bar, and
the joblib backend that sends a model search to the cluster.

Without a scheduler nothing here imports dask: everything stays local, as before.
"""

from __future__ import annotations

import contextvars
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, replace
from typing import Any

from facefleet.errors import ConfigError, FacefleetError
from facefleet.settings import SCHEDULER_PATTERN, SEND_MODES, to_mapping

_ADDRESS = re.compile(SCHEDULER_PATTERN)
_LOOPBACK = ("127.", "localhost", "[::1]")


class ComputeError(FacefleetError):
    """The Dask cluster is unreachable, misconfigured, or a task failed for good."""


@dataclass(frozen=True)
class ComputeConfig:
    """The ``compute`` section: where batch work runs and how it is cut into tasks."""

    scheduler: str | None = None  # tcp://HOST:8786; None = run locally
    retries: int = 2  # a task that raised is tried again this many times
    chunk: int = 8  # files per task: fewer, larger tasks amortise the scheduler's cost
    send: str = "auto"  # paths (shared filesystem) | bytes (file contents) | auto (paths on loopback)
    connect_timeout: float = 30.0

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, scheduler: str | None = None) -> ComputeConfig:
        data = dict(data or {})
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"compute: unknown setting(s) {', '.join(unknown)}")
        cfg = cls(**data)
        if scheduler:
            cfg = replace(cfg, scheduler=scheduler)
        return cfg.validated()

    def validated(self) -> ComputeConfig:
        sched = self.scheduler or None
        if sched is not None:
            if not isinstance(sched, str) or not _ADDRESS.fullmatch(sched.strip()):
                raise ConfigError(f"compute.scheduler: expected tcp://HOST:8786, got {sched!r}")
            sched = sched.strip().rstrip("/")
        for name, low in (("retries", 0), ("chunk", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"compute.{name}: expected an integer >= {low}, got {value!r}")
        if self.send not in SEND_MODES:
            raise ConfigError(f"compute.send: expected one of {', '.join(SEND_MODES)}, got {self.send!r}")
        if not isinstance(self.connect_timeout, (int, float)) or self.connect_timeout <= 0:
            raise ConfigError(f"compute.connect_timeout: expected seconds > 0, got {self.connect_timeout!r}")
        return replace(self, scheduler=sched)

    @property
    def distributed(self) -> bool:
        return self.scheduler is not None

    def ships_bytes(self) -> bool:
        """Whether tasks carry file contents (workers on other machines) or only paths."""
        if self.send != "auto":
            return self.send == "bytes"
        host = (self.scheduler or "").split("://", 1)[-1]
        return not host.startswith(_LOOPBACK)


def for_workspace(ws, scheduler: str | None = None) -> ComputeConfig:
    """The workspace's ``compute`` settings, with ``scheduler`` (``--scheduler``) overriding them."""
    return ComputeConfig.from_dict(to_mapping(ws.settings.compute), scheduler=scheduler)


# -- the settings in force for the current call -------------------------------------------------
_CURRENT: contextvars.ContextVar[ComputeConfig | None] = contextvars.ContextVar(
    "facefleet_compute", default=None
)


def current() -> ComputeConfig | None:
    """The distributed compute settings in force, or None when work runs locally."""
    cfg = _CURRENT.get()
    return cfg if cfg is not None and cfg.distributed else None


@contextmanager
def using(cfg: ComputeConfig | None) -> Iterator[ComputeConfig | None]:
    """Run the enclosed library calls with ``cfg`` (None or no scheduler: locally)."""
    token = _CURRENT.set(cfg)
    try:
        yield current()
    finally:
        _CURRENT.reset(token)


# -- the client ---------------------------------------------------------------------------------
_CLIENTS: dict[str, Any] = {}
_LOCK = threading.Lock()


def client(cfg: ComputeConfig):  # -> distributed.Client
    """The connected client for ``cfg.scheduler`` (one per address and process)."""
    if not cfg.distributed:
        raise ComputeError("no Dask scheduler configured (compute.scheduler or --scheduler)")
    with _LOCK:
        got = _CLIENTS.get(cfg.scheduler)
        if got is not None and got.status == "running":
            return got
        try:
            from distributed import Client
        except ImportError as exc:
            raise ComputeError(f"dask.distributed is not installed ('facefleet[dask]'): {exc}") from None
        try:
            got = Client(cfg.scheduler, timeout=cfg.connect_timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ComputeError(f"cannot reach the Dask scheduler at {cfg.scheduler}: {exc}") from None
        _CLIENTS[cfg.scheduler] = got
        return got


def close_clients() -> None:
    """Disconnect every client this process opened (the cluster keeps running)."""
    with _LOCK:
        for c in _CLIENTS.values():
            with suppress(Exception):  # closing is best effort
                c.close()
        _CLIENTS.clear()


def total_threads(c, timeout: float) -> int:
    """Worker threads of the cluster, waiting up to ``timeout`` s for a first worker."""
    if not c.nthreads():
        try:
            c.wait_for_workers(1, timeout=timeout)
        except TimeoutError:
            raise ComputeError(f"the Dask scheduler at {c.scheduler.address} has no workers") from None
    return max(1, sum(c.nthreads().values()))


def map_ordered(
    fn: Callable[..., Any],
    items: Sequence[Any],
    *args: Any,
    cfg: ComputeConfig,
    desc: str = "",
    weights: Sequence[int] | None = None,
    prefix: str = "facefleet",
    on_killed: Callable[[Any], Any] | None = None,
) -> Iterator[Any]:
    """``fn(item, *args)`` for every item on the cluster; results are yielded in item order.

    At most about twice the cluster's threads tasks are in flight, so a long job never holds
    every input in memory at once. A task that raises is retried ``cfg.retries`` times; a task
    whose worker died is rescheduled by Dask; every result arrives once, whichever attempt
    produced it. A task Dask gives up on because its workers kept dying (``KilledWorker``,
    after the scheduler's ``allowed-failures``) gets ``on_killed(item)`` as its result when
    given, else ends the run. The progress bar counts ``weights`` (e.g. files per task) as
    tasks complete.
    """
    from distributed import KilledWorker, as_completed

    from facefleet.progress import progress

    c = client(cfg)
    weights = list(weights) if weights is not None else [1] * len(items)
    limit = max(4, 2 * total_threads(c, cfg.connect_timeout))
    index: dict[str, int] = {}
    live: dict[str, Any] = {}
    pending = iter(enumerate(items))
    run = uuid.uuid4().hex[:12]
    ac = as_completed(loop=c.loop)

    def submit() -> None:
        nxt = next(pending, None)
        if nxt is not None:
            i, item = nxt
            fut = c.submit(fn, item, *args, retries=cfg.retries, pure=False, key=f"{prefix}-{run}-{i}")
            index[fut.key] = i
            live[fut.key] = fut
            ac.add(fut)

    def ticks() -> Iterator[Any]:
        # the bar counts files, not tasks: a finished task advances it by its weight
        for fut in ac:
            w = weights[index[fut.key]]
            for _ in range(w - 1):
                yield None
            yield fut

    for _ in range(limit):
        submit()
    done: dict[int, Any] = {}
    emitted = 0
    try:
        for fut in progress(ticks(), total=sum(weights), desc=desc):
            if fut is None:
                continue
            live.pop(fut.key, None)
            try:
                result = fut.result()
            except Exception as exc:  # noqa: BLE001 - one line for the user, not a traceback
                if on_killed is None or not isinstance(exc, KilledWorker):
                    lines = str(exc).strip().splitlines()  # Dask's own messages run over lines
                    what = f"{type(exc).__name__}: {lines[0] if lines else ''}"
                    raise ComputeError(f"{desc or prefix}: a task failed on the cluster: {what}") from exc
                result = on_killed(items[index[fut.key]])
            done[index.pop(fut.key)] = result
            fut.release()
            submit()
            while emitted in done:
                yield done.pop(emitted)
                emitted += 1
    finally:
        if live:
            c.cancel(list(live.values()))


# -- joblib --------------------------------------------------------------------------------------
def joblib_backend():
    """A context in which joblib (scikit-learn's ``n_jobs``) runs on the cluster in force, or a
    no-op when work runs locally."""
    cfg = current()
    if cfg is None:
        return nullcontext()
    import joblib

    return joblib.parallel_config(backend="dask", client=client(cfg), wait_for_workers_timeout=60)

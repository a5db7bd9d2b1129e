"""Child processes that die with their parent.

A worker of ``enroll`` or ``train`` holds 200-300 MB; when its parent is killed (SIGKILL,
SIGTERM, out of memory) it must go too instead of idling for minutes. Two mechanisms, called
first thing in the child:

* Linux ``PR_SET_PDEATHSIG``: the kernel sends the child SIGKILL the moment its parent dies
  (only where the parent's spawning thread lives as long as the child, see ``die_with_parent``);
* a watchdog thread that exits the child when its parent pid changes (re-parented to init or
  a sub-reaper), on any POSIX system, within ``poll`` seconds.

``main_script_hidden`` keeps a spawned child from re-running the caller's script.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

PR_SET_PDEATHSIG = 1


def _set_pdeathsig() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent_pid: int, poll: float) -> None:
    while True:
        time.sleep(poll)
        if os.getppid() != parent_pid:
            os._exit(1)


def die_with_parent(parent_pid: int | None = None, *, pdeathsig: bool = True, poll: float = 0.5) -> None:
    """Make this process exit when ``parent_pid`` (default: the current parent) dies.

    ``pdeathsig`` fires when the parent *thread* that started this process ends: leave it off
    for pools whose workers are started from short-lived threads (joblib/loky).
    """
    parent_pid = parent_pid or os.getppid()
    if pdeathsig:
        _set_pdeathsig()
    if os.getppid() != parent_pid:  # the parent died before we got here
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid, poll), name="die-with-parent", daemon=True).start()


def loky_worker_init(parent_pid: int) -> None:
    """joblib/loky worker initializer: die with the process that set up the pool (passed in,
    since a worker importing slowly may already be orphaned when this runs)."""
    die_with_parent(parent_pid, pdeathsig=False)


def loky_dies_with_parent():
    """A ``joblib.parallel_config`` whose loky workers exit with this process (scikit-learn's
    ``n_jobs`` searches run inside it)."""
    import joblib

    return joblib.parallel_config(backend="loky", initializer=loky_worker_init, initargs=(os.getpid(),))


_MAIN_LOCK = threading.RLock()  # children started from several threads (Dask worker threads)


@contextmanager
def main_script_hidden() -> Iterator[None]:
    """Keep processes spawned meanwhile from re-running the caller's script (one without a
    ``__main__`` guard would run again in each child); children only need facefleet's
    functions. Thread-safe: the ``__main__`` attributes are process-wide."""
    with _MAIN_LOCK:
        main = sys.modules.get("__main__")
        keys = ("__file__", "__spec__")
        saved = {k: getattr(main, k) for k in keys if main is not None and hasattr(main, k)}
        try:
            for key in saved:
                if key == "__file__":
                    delattr(main, key)
                else:
                    setattr(main, key, None)
            yield
        finally:
            for key, value in saved.items():
                setattr(main, key, value)

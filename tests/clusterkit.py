"""Real servers the scale-out tests and benches start on 127.0.0.1: a Dask scheduler with
``dask worker`` subprocesses, and a PostgreSQL cluster from Debian's package in a temporary
folder. Every wait is bounded; ``stop()`` ends everything they started."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from testkit import free_port, wait_port

REPO = Path(__file__).resolve().parents[1]
DASK = Path(sys.executable).with_name("dask")
# Debian's server binaries (15 on bookworm); the newest installed major version wins.
PG_BIN = max(
    Path("/usr/lib/postgresql").glob("*/bin"),
    key=lambda p: int(p.parent.name),
    default=Path("/usr/lib/postgresql/15/bin"),
)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **(extra or {})}
    # workers import this checkout's facefleet; one BLAS/ONNX thread per worker thread
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", FACEFLEET_NO_PROGRESS="1")
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return env


@dataclass
class DaskCluster:
    """``dask scheduler`` plus ``dask worker --nthreads 1 --no-nanny`` processes on loopback
    (``nanny=True``: each worker under its nanny, which starts it again when it dies; ``env``:
    more environment for every process, e.g. Dask config or the face engine's fault hook)."""

    root: Path
    nanny: bool = False
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    scheduler: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self, n_workers: int = 2, timeout: float = 60.0) -> DaskCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        cmd = [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"]
        self.scheduler = self._spawn(cmd, "scheduler")
        try:
            wait_port(self.port, timeout)
            for _ in range(n_workers):
                self.add_worker()
            if n_workers:
                self.wait_workers(n_workers, timeout)
        except BaseException:
            self.stop()  # a cluster that failed to start leaves no process behind
            raise
        return self

    def add_worker(self) -> subprocess.Popen:
        cmd = [
            str(DASK), "worker", self.address, "--nthreads", "1",
            "--nanny" if self.nanny else "--no-nanny", "--no-dashboard",
            "--host", "127.0.0.1", "--memory-limit", "0", "--death-timeout", "60",
            "--local-directory", str(self.root / "dask-scratch"),
        ]  # fmt: skip
        proc = self._spawn(cmd, f"worker{len(self.workers)}")
        self.workers.append(proc)
        return proc

    def _spawn(self, cmd: list[str], name: str) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(self.env), start_new_session=True
        )

    def wait_workers(self, n: int, timeout: float = 60.0) -> None:
        from distributed import Client

        with Client(self.address, timeout=timeout) as c:
            c.wait_for_workers(n, timeout=timeout)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill_worker(self, index: int = 0) -> None:
        """SIGKILL one worker: no goodbye to the scheduler, its tasks are lost mid-run."""
        proc = self.workers[index]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in [*self.workers, self.scheduler]:
            if proc is None:
                continue
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # nothing of theirs needs a clean shutdown
                proc.kill()
                proc.wait(timeout=10)


# -- PostgreSQL ------------------------------------------------------------------------------------
def _pg_user() -> str | None:
    """The account initdb runs as: itself when not root, else Debian's ``postgres`` user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError("running as root and there is no 'postgres' user for initdb") from exc
    return "postgres"


@dataclass
class Postgres:
    """A throwaway PostgreSQL 15 cluster on 127.0.0.1 (trust auth), in ``root`` (as root: in
    a fresh folder of /tmp owned by the ``postgres`` account, which initdb runs as)."""

    root: Path
    port: int = 0
    user: str | None = None

    @property
    def data(self) -> Path:
        return self.root / "pgdata"

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user or 'postgres'}@127.0.0.1:{self.port}/{db}"

    def _run(self, args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
        cmd = (["runuser", "-u", self.user, "--"] if self.user else []) + args
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout)

    def start(self) -> Postgres:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"PostgreSQL 15 not installed ({PG_BIN}/initdb): apt-get install postgresql")
        self.user = _pg_user()
        if self.user:
            # pytest's folders are private to root: the server's own lives in /tmp, owned by it
            self.root = Path(tempfile.mkdtemp(prefix="facefleet-pg-"))
            shutil.chown(self.root, self.user)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=200"
        )
        try:
            self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", self.user or "postgres",
                       "--auth=trust", "-E", "UTF8", "--no-sync"])  # fmt: skip
            self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "pg.log"),
                       "-o", opts, "-w", "-t", "60", "start"])  # fmt: skip
            wait_port(self.port, 30)
        except BaseException:
            self.stop()  # nothing left running or on disk when the start fails
            raise
        return self

    def create_db(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(self.url())
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url(name)

    def stop(self) -> None:
        if self.data.exists():
            try:
                self._run(
                    [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop"]
                )
            except subprocess.SubprocessError:
                pid_file = self.data / "postmaster.pid"
                if pid_file.exists():
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        if self.user:
            shutil.rmtree(self.root, ignore_errors=True)


def wait_until(predicate, timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")

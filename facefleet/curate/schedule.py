"""Schedule: run ``facefleet autotrain`` every night, as a systemd user timer + service or as
a crontab line, written into a folder (default ``~/.config/systemd/user``)."""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from facefleet.errors import FacefleetError
from facefleet.fileio import atomic_write_text
from facefleet.workspace import Workspace

UNIT = "facefleet-autotrain"
DEFAULT_DIR = Path("~/.config/systemd/user")


@dataclass
class Installed:
    files: list[Path]
    instructions: str


def parse_at(at: str) -> tuple[int, int]:
    """``HH:MM`` (24 h) -> (hour, minute); a clear error otherwise."""
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", at.strip())
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise FacefleetError(f"--at {at!r}: expected a time of day as HH:MM, e.g. 03:00")
    return int(m.group(1)), int(m.group(2))


def command(ws: Workspace, python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", "facefleet.cli.main", "--workspace", str(ws.root), "autotrain"]


def service_text(ws: Workspace, python: str | None = None) -> str:
    cmd = " ".join(shlex.quote(c) for c in command(ws, python))
    return (
        f"[Unit]\nDescription=facefleet autotrain for {ws.root}\n\n"
        f"[Service]\nType=oneshot\nWorkingDirectory={ws.root}\n"
        "Environment=MLFLOW_DISABLE_TELEMETRY=true\nEnvironment=FACEFLEET_NO_PROGRESS=1\n"
        f"ExecStart={cmd}\n"
    )


def timer_text(hour: int, minute: int) -> str:
    return (
        f"[Unit]\nDescription=facefleet autotrain every day at {hour:02d}:{minute:02d}\n\n"
        f"[Timer]\nOnCalendar=*-*-* {hour:02d}:{minute:02d}:00\nPersistent=true\n"
        f"Unit={UNIT}.service\n\n[Install]\nWantedBy=timers.target\n"
    )


def cron_line(ws: Workspace, hour: int, minute: int, python: str | None = None) -> str:
    cmd = " ".join(shlex.quote(c) for c in command(ws, python))
    out = shlex.quote(str(ws.output_dir / "autotrain-cron.log"))
    return f"{minute} {hour} * * * MLFLOW_DISABLE_TELEMETRY=true {cmd} >> {out} 2>&1\n"


def install(
    ws: Workspace,
    at: str = "03:00",
    *,
    crontab: bool = False,
    folder: Path | None = None,
    python: str | None = None,
) -> Installed:
    """Write the timer + service (or the crontab line) and say how to enable it."""
    hour, minute = parse_at(at)
    folder = Path(folder or DEFAULT_DIR).expanduser()
    if crontab:
        path = folder / f"{UNIT}.crontab"
        atomic_write_text(path, cron_line(ws, hour, minute, python))
        how = f"add it to your crontab with:\n  (crontab -l 2>/dev/null; cat {path}) | crontab -"
        return Installed([path], how)
    service, timer = folder / f"{UNIT}.service", folder / f"{UNIT}.timer"
    atomic_write_text(service, service_text(ws, python))
    atomic_write_text(timer, timer_text(hour, minute))
    how = (
        "enable it with:\n  systemctl --user daemon-reload\n"
        f"  systemctl --user enable --now {UNIT}.timer\n"
        "  loginctl enable-linger $USER   # runs even when you are not logged in\n"
        f"check it with: systemctl --user list-timers {UNIT}.timer"
    )
    if folder != DEFAULT_DIR.expanduser():
        how = f"copy {service.name} and {timer.name} to ~/.config/systemd/user/, then " + how
    return Installed([service, timer], how)

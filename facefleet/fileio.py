"""File utilities every stage shares: content hashes and atomic writes (a reader sees the old
file or the new one, never half of one)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path
from typing import BinaryIO

from facefleet.errors import FacefleetError


class NotARegularFileError(FacefleetError, OSError):
    """A path that is a folder, a device, a FIFO or a socket where a file's bytes were expected
    (reading ``/dev/zero`` or a FIFO would never end), or a file over the size limit."""


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_regular(path: Path | str, max_bytes: int | None = None) -> BinaryIO:
    """Open a regular file for reading, refusing anything whose read might never end.

    The open is non-blocking (a FIFO without a writer would block ``open`` itself); the type
    is checked on the opened descriptor, so a path swapped after a ``stat`` cannot slip by.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
            raise NotARegularFileError(f"{path}: {kind}, not a regular file")
        if max_bytes is not None and info.st_size > max_bytes:
            raise NotARegularFileError(
                f"{path}: file too large ({info.st_size / 1e6:.0f} MB > {max_bytes / 1e6:.0f} MB)"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str, chunk: int = 1 << 20, max_bytes: int | None = None) -> str:
    """sha256 of a regular file (``NotARegularFileError`` for a device, FIFO, folder)."""
    digest = hashlib.sha256()
    with open_regular(path, max_bytes) as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_dir(tmp_dir: Path, out_dir: Path) -> None:
    """Rename the filled folder ``tmp_dir`` to ``out_dir``, replacing what was there (the old
    one is moved aside first, then removed: readers see the old folder or the new one)."""
    tmp_dir, out_dir = Path(tmp_dir), Path(out_dir)
    old = None
    if out_dir.exists() or out_dir.is_symlink():
        old = out_dir.with_name(f".{out_dir.name}.old{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(tmp_dir, out_dir)
    _fsync_dir(out_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()

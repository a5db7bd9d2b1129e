"""The model-folder layout on a device, in Python and as the POSIX shell that does the same.

Owns the one definition of::

    <models_dir>/<model>/<version>/     one unpacked, verified bundle
    <models_dir>/<model>/current        symlink -> <version> (relative)
    <models_dir>/<model>/previous       symlink -> the version current pointed at before
    <models_dir>/<model>/.incoming-*    a bundle being unpacked/uploaded (removed when stale)

and its rules: a symlink is switched by renaming a temporary symlink over it (atomic); a
switch makes the old ``current`` the ``previous``; rollback swaps them; pruning keeps the
newest ``keep`` versions and never removes ``current`` or ``previous``.

The ``sh_*`` functions return the shell commands that apply the same rules on devices
without Python (used by ``fleet/deploy.py`` over SSH and rendered into ``fleet/install.sh``);
``tests/test_layout.py`` checks both give the same folder. Standard library only.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from facefleet.errors import DeployError

CURRENT = "current"
PREVIOUS = "previous"
TMP_PREFIX = ".incoming-"
DEFAULT_KEEP = 3
# A hidden temp dir older than this is an abandoned install (a crash), not one in progress.
STALE_TMP_SECONDS = 3600


# -- pure rules ---------------------------------------------------------------------------


def version_dirs(names: Sequence[str]) -> list[int]:
    """The version numbers among directory names (``"3"`` -> 3), ascending."""
    return sorted(int(n) for n in names if n.isdigit())


def versions_to_prune(versions: Sequence[int], keep: int, protect: Sequence[int | None]) -> list[int]:
    """Versions to remove so that the newest ``keep`` remain; never one in ``protect``."""
    if keep < 1:
        raise DeployError(f"keep must be at least 1, got {keep}")
    newest = set(sorted(versions, reverse=True)[:keep])
    guarded = {p for p in protect if p is not None}
    return sorted(v for v in versions if v not in newest and v not in guarded)


def tmp_link_name(link: str) -> str:
    """The temporary symlink renamed over ``link`` (hidden, so never taken for a version)."""
    return f".{link}.tmp"


# -- Python -------------------------------------------------------------------------------


def link_target(link: Path) -> int | None:
    """The version a ``current``/``previous`` symlink points at, or None."""
    try:
        target = os.readlink(link)
    except (FileNotFoundError, OSError):
        return None
    name = Path(target).name
    return int(name) if name.isdigit() else None


def set_link(folder: Path, name: str, target: int | str | None, *, check: bool = True) -> None:
    """Point ``folder/name`` at ``target`` atomically (remove it when ``target`` is None).

    With ``check`` the target must be a folder beside the link (a version)."""
    link = Path(folder) / name
    if target is None:
        if link.is_symlink():
            link.unlink()
        return
    if check and not (Path(folder) / str(target)).is_dir():
        raise DeployError(f"{folder}: no version {target} to point {name} at")
    tmp = Path(folder) / f"{tmp_link_name(name)}{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(str(target), tmp)  # relative: the models dir can move or be mounted elsewhere
    os.replace(tmp, link)


def switch(model_dir: Path, version: int | str) -> int | None:
    """Make ``version`` current, the old current previous. Returns the old current."""
    model_dir = Path(model_dir)
    old = link_target(model_dir / CURRENT)
    if old is not None and str(old) == str(version):
        return old
    set_link(model_dir, CURRENT, version)
    if old is not None and (model_dir / str(old)).is_dir():
        set_link(model_dir, PREVIOUS, old)
    return old


def rollback(model_dir: Path) -> tuple[int | None, int]:
    """Swap ``current`` and ``previous``; returns ``(from, to)``."""
    model_dir = Path(model_dir)
    cur, prev = link_target(model_dir / CURRENT), link_target(model_dir / PREVIOUS)
    if prev is None or not (model_dir / str(prev)).is_dir():
        raise DeployError(f"{model_dir}: no previous version to roll back to")
    set_link(model_dir, CURRENT, prev)
    if cur is not None and (model_dir / str(cur)).is_dir():
        set_link(model_dir, PREVIOUS, cur)
    return cur, prev


def prune(model_dir: Path, keep: int = DEFAULT_KEEP) -> list[int]:
    """Remove all but the newest ``keep`` versions (never current or previous) and stale temps."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    names = [p.name for p in model_dir.iterdir() if p.is_dir() and not p.is_symlink()]
    protect = [link_target(model_dir / CURRENT), link_target(model_dir / PREVIOUS)]
    doomed = versions_to_prune(version_dirs(names), keep, protect)
    for version in doomed:
        shutil.rmtree(model_dir / str(version))
    now = time.time()
    for name in names:
        path = model_dir / name
        if name.startswith(TMP_PREFIX) and now - path.stat().st_mtime > STALE_TMP_SECONDS:
            shutil.rmtree(path, ignore_errors=True)
    return doomed


def state(models_dir: Path, model: str) -> dict[str, Any]:
    """What a device holds for ``model``: current, previous, and the versions on disk."""
    model_dir = Path(models_dir) / model
    names = [p.name for p in model_dir.iterdir() if p.is_dir()] if model_dir.is_dir() else []
    return {
        "model": model,
        "current": link_target(model_dir / CURRENT),
        "previous": link_target(model_dir / PREVIOUS),
        "versions": version_dirs(names),
    }


# -- the same rules as POSIX shell (coreutils only) -----------------------------------------


def q(value: Any) -> str:
    """``value`` quoted for the shell."""
    return shlex.quote(str(value))


def sh_set_link(folder: str, name: str, target: int | str | None) -> str:
    """Shell for :func:`set_link` (``ln -sfn`` a temporary symlink, then ``mv -T`` it over)."""
    path = f"{folder}/{name}"
    if target is None:
        return f"rm -f {q(path)}"
    tmp = f"{folder}/{tmp_link_name(name)}"
    return f"ln -sfn {q(target)} {q(tmp)} && mv -T {q(tmp)} {q(path)}"


def sh_read_links(model_dir: str) -> str:
    """Shell printing ``<current>|<previous>`` (each empty when absent)."""
    cur, prev = q(f"{model_dir}/{CURRENT}"), q(f"{model_dir}/{PREVIOUS}")
    return f"readlink {cur} || true; echo '|'; readlink {prev} || true"


def parse_links(out: str) -> tuple[int | None, int | None]:
    """The versions :func:`sh_read_links` printed."""
    parts = [p.strip() for p in out.split("|")]
    cur, prev = (parts + ["", ""])[:2]
    return (int(cur) if cur.isdigit() else None, int(prev) if prev.isdigit() else None)


def sh_make_tmp(model_dir: str, tag: int | str) -> str:
    """Shell creating (and printing) a hidden upload folder in ``model_dir``."""
    return f"mkdir -p {q(model_dir)} && mktemp -d {q(model_dir + '/' + TMP_PREFIX)}{tag}-XXXXXX"


def sh_list(model_dir: str) -> str:
    """Shell printing the folder's entries, then ``|current|previous`` (for :func:`sh_prune`)."""
    links = f"readlink {CURRENT} || true; echo '|'; readlink {PREVIOUS} || true"
    return f"cd {q(model_dir)} && ls -1A; echo '|'; {links}"


def prune_from_listing(out: str, keep: int) -> list[int]:
    """The versions to remove, from what :func:`sh_list` printed."""
    listing, cur, prev = (part.split() for part in out.split("|"))
    protect = [int(x) for x in (*cur, *prev) if x.isdigit()]
    return versions_to_prune(version_dirs(listing), keep, protect)


def sh_remove(model_dir: str, versions: Sequence[int | str]) -> str:
    """Shell removing the given versions of ``model_dir``."""
    return f"cd {q(model_dir)} && rm -rf " + " ".join(q(v) for v in versions)


def sh_switch(mdir_var: str = "MDIR", version_var: str = "VERSION") -> str:
    """Shell for :func:`switch`; the model folder and version are in shell variables."""
    m, v = f"${mdir_var}", f"${version_var}"
    tcur, tprev = f"{m}/{tmp_link_name(CURRENT)}", f"{m}/{tmp_link_name(PREVIOUS)}"
    return (
        f'OLD=$(readlink "{m}/{CURRENT}" || true)\n'
        f'if [ "$OLD" != "{v}" ]; then\n'
        f'    ln -sfn "{v}" "{tcur}" && mv -T "{tcur}" "{m}/{CURRENT}"\n'
        f'    if [ -n "$OLD" ] && [ -d "{m}/$OLD" ]; then\n'
        f'        ln -sfn "$OLD" "{tprev}" && mv -T "{tprev}" "{m}/{PREVIOUS}"\n'
        "    fi\n"
        "fi\n"
    )


def sh_prune(mdir_var: str = "MDIR", keep_var: str = "KEEP") -> str:
    """Shell for :func:`prune` of the version folders (stale temps are left to the next
    Python install); the model folder and keep count are in shell variables."""
    m = f"${mdir_var}"
    return (
        f'CUR=$(readlink "{m}/{CURRENT}" || true)\n'
        f'PREV=$(readlink "{m}/{PREVIOUS}" || true)\n'
        f'ls -1A "{m}" | grep -E \'^[0-9]+$\' | sort -rn | tail -n +"$((${keep_var} + 1))"'
        " | while read -r v; do\n"
        f'    [ "$v" = "$CUR" ] || [ "$v" = "$PREV" ] || rm -rf "${{{mdir_var}:?}}/$v"\n'
        "done\n"
    )

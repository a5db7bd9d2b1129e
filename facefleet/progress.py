"""Progress bars for long work: shown on a terminal, silent in pipes, tests and CI logs."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, total: int | None = None, desc: str = "") -> Iterator[T]:
    """Iterate over ``items`` with a tqdm bar when stderr is a terminal."""
    show = sys.stderr.isatty() and not os.environ.get("FACEFLEET_NO_PROGRESS")
    if not show:
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, total=total, desc=desc, unit="img", leave=False)

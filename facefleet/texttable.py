"""Plain text for the terminal: tables with left-aligned columns, lists of skipped inputs."""

from __future__ import annotations

from collections.abc import Sequence


def text_table(rows: Sequence[Sequence[str]], *, rule: bool = False) -> str:
    """``rows`` (the first is the header) as aligned columns; ``rule`` draws dashes under it."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if rule:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def skipped_lines(skipped: Sequence[tuple[str, str]], limit: int = 20) -> list[str]:
    """One indented line per skipped input (where, why), the first ``limit`` of them."""
    lines = [f"  skipped {where}: {why}" for where, why in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more")
    return lines

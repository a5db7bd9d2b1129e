"""PNG figures for training and evaluation runs (matplotlib, Agg backend: no display)."""

from __future__ import annotations

import io

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def confusion_png(cm: np.ndarray, labels: list[str], title: str = "Confusion matrix") -> bytes:
    """Rows = truth, columns = decision (last column/row may be ``unknown``)."""
    plt = _plt()
    n = len(labels)
    size = min(4 + 0.25 * n, 24)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    if n <= 60:
        ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(n), labels, fontsize=7)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        str(int(cm[i, j])),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if cm[i, j] > cm.max() / 2 else "black",
                    )
    ax.set_xlabel("decision")
    ax.set_ylabel("truth")
    ax.set_title(title)
    return _png(fig)


def strangers_missed_png(
    known_missed,
    strangers_named,
    operating: tuple[float, float] | None = None,
    title: str = "Strangers named vs known people missed",
    interval: tuple[float, float] | None = None,
) -> bytes:
    """The trade-off a person chooses on: share of strangers named (y, log scale) against
    share of known faces not named correctly (x), one point per threshold; ``operating`` =
    (known missed, strangers named) of the model, ``interval`` the latter's uncertainty."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.asarray(known_missed, dtype=np.float64)
    y = np.asarray(strangers_named, dtype=np.float64)
    floor = 1e-4
    ax.plot(100 * x, 100 * np.maximum(y, floor), label="one threshold for everybody, swept")
    if operating is not None:
        ox, oy = operating
        label = f"this model: {100 * oy:.2f} % strangers named, {100 * ox:.1f} % known missed"
        if interval is not None:
            lo, hi = interval
            ax.errorbar(
                [100 * ox],
                [100 * max(oy, floor)],
                yerr=[[100 * max(oy - lo, 0.0)], [100 * max(hi - oy, 0.0)]],
                fmt="o",
                color="C3",
                capsize=4,
                label=label,
            )
        else:
            ax.plot([100 * ox], [100 * max(oy, floor)], "o", color="C3", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("known faces missed (rejected or misnamed), %")
    ax.set_ylabel("strangers named, %")
    ax.set_xlim(0, max(5.0, min(100.0, 100 * float(np.max(x, initial=0.0)))))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _png(fig)

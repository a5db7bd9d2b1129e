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


def far_frr_png(
    grid: np.ndarray,
    far: np.ndarray,
    frr: np.ndarray,
    operating: tuple[float, float] | None = None,
    title: str = "FAR / FRR vs distance threshold",
) -> bytes:
    """Curves over a global threshold; ``operating`` = (FAR, FRR) of the per-person thresholds."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(grid, far, label="false accept rate")
    ax.plot(grid, frr, label="false reject rate")
    if operating is not None:
        ax.axhline(
            operating[0], color="C0", ls=":", lw=1, label=f"per-person thresholds: FAR {operating[0]:.3f}"
        )
        ax.axhline(
            operating[1], color="C1", ls=":", lw=1, label=f"per-person thresholds: FRR {operating[1]:.3f}"
        )
    ax.set_xlabel("distance threshold")
    ax.set_ylabel("rate")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _png(fig)


def distance_hist_png(
    genuine: np.ndarray, impostor: np.ndarray, thresholds: np.ndarray, strangers: np.ndarray | None = None
) -> bytes:
    """Leave-one-out genuine vs impostor distances, with the fitted thresholds."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1.4, 71)
    series = [
        ("genuine", genuine[np.isfinite(genuine)]),
        ("impostor", impostor[np.isfinite(impostor)]),
        ("strangers", np.asarray(strangers if strangers is not None else [], dtype=float)),
    ]
    for label, values in series:
        if len(values):  # an empty series has no density (numpy would divide by zero)
            ax.hist(values, bins=bins, alpha=0.6, density=True, label=label)
    for t in np.unique(np.round(thresholds, 3))[:50]:
        ax.axvline(t, color="k", alpha=0.15, lw=0.8)
    ax.set_xlabel("distance to the person's nearest gallery face")
    ax.set_ylabel("density")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_title("Distances and per-person thresholds (grey)")
    return _png(fig)

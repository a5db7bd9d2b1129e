"""Unknown faces kept for curation: the best crop of each unknown track goes to
``few_shot_examples/unknown/`` as a JPEG plus a sidecar JSON (embedding, quality, context).

Captures are de-duplicated (a face close to a recent capture is the same stranger again),
rate-limited, and capped by count and age so a device never fills its disk.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facefleet.clock import file_stamp
from facefleet.fileio import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class UnknownConfig:
    dedup_distance: float = 0.5  # closer than this to a recent capture: the same face again
    recent: int = 200  # captures remembered for de-duplication
    min_interval: float = 1.0  # seconds between two new captures
    max_files: int = 500  # oldest captures are removed beyond this
    max_age_days: float = 30.0
    min_quality: float = 0.0  # quality score (0..1) a crop needs
    jpeg_quality: int = 90


def nearest_distance(vector: np.ndarray, recent: np.ndarray) -> float:
    """Smallest Euclidean distance from ``vector`` to the rows of ``recent`` (inf if none)."""
    if len(recent) == 0:
        return float("inf")
    return float(np.sqrt(((recent - vector[None]) ** 2).sum(axis=1)).min())


def prune_plan(entries: list[tuple[Path, float]], now: float, cfg: UnknownConfig) -> list[Path]:
    """Which captures (path, mtime) to delete: older than ``max_age_days``, then the oldest
    beyond ``max_files``."""
    max_age = cfg.max_age_days * 86400.0
    young = [(p, t) for p, t in entries if now - t <= max_age]
    doomed = [p for p, t in entries if now - t > max_age]
    young.sort(key=lambda e: e[1])
    excess = len(young) - cfg.max_files
    if excess > 0:
        doomed += [p for p, _ in young[:excess]]
    return doomed


class UnknownCollector:
    """Saves unknown faces into ``folder`` under the rules of :class:`UnknownConfig`."""

    def __init__(self, folder: Path, cfg: UnknownConfig | None = None, *, device: str = "") -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg or UnknownConfig()
        self.device = device
        self._recent: deque[np.ndarray] = deque(maxlen=self.cfg.recent)
        self._last_capture = -float("inf")
        self._by_track: dict[tuple[str, int], tuple[Path, float]] = {}
        self.saved = 0
        self.skipped_duplicate = 0
        self.skipped_rate = 0
        self._load_recent()
        self.prune()

    def _load_recent(self) -> None:
        """Remember the embeddings of the newest captures already on disk (after a restart)."""
        sidecars = sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for side in sidecars[-self.cfg.recent :]:
            try:
                vec = np.asarray(json.loads(side.read_text())["embedding"], dtype=np.float32)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            self._recent.append(vec)

    def offer(
        self,
        *,
        run: str,
        track_id: int,
        crop: np.ndarray,
        embedding: np.ndarray,
        quality: float,
        info: dict[str, Any],
        now: float | None = None,
    ) -> Path | None:
        """Consider the current best crop of an unknown track; returns the JPEG path when it
        is (or already was) kept. A later, better crop of the same track replaces its files."""
        now = time.time() if now is None else now
        key = (run, track_id)
        if key in self._by_track:
            path, kept_quality = self._by_track[key]
            if quality > kept_quality:
                self._write(path, crop, embedding, quality, info)
                self._by_track[key] = (path, quality)
            return path
        if quality < self.cfg.min_quality:
            return None
        if nearest_distance(embedding, np.array(self._recent)) < self.cfg.dedup_distance:
            self.skipped_duplicate += 1
            return None
        if now - self._last_capture < self.cfg.min_interval:
            self.skipped_rate += 1
            return None
        stamp = file_stamp(now, sep="-")
        path = self.folder / f"unknown_{stamp}_{run}_t{track_id}.jpg"
        self._write(path, crop, embedding, quality, info)
        self._recent.append(np.asarray(embedding, dtype=np.float32))
        self._by_track[key] = (path, quality)
        self._last_capture = now
        self.saved += 1
        if self.saved % 50 == 0:
            self.prune()
        return path

    def _write(
        self, path: Path, crop: np.ndarray, embedding: np.ndarray, quality: float, info: dict[str, Any]
    ) -> None:
        import cv2

        ok, jpeg = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
        if not ok:
            log.warning("could not encode an unknown-face crop; skipped")
            return
        sidecar = {
            **info,
            "device": self.device,
            "quality_score": round(float(quality), 4),
            "embedding": [round(float(v), 7) for v in np.asarray(embedding).ravel()],
            "image": path.name,
        }
        # the sidecar first: a JPEG is never on disk without its embedding
        atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, ensure_ascii=False))
        atomic_write_bytes(path, jpeg.tobytes())

    def prune(self, now: float | None = None) -> int:
        """Apply the count and age caps; returns how many captures were removed."""
        now = time.time() if now is None else now
        entries = []
        for jpg in self.folder.glob("*.jpg"):
            try:
                entries.append((jpg, jpg.stat().st_mtime))
            except FileNotFoundError:
                continue
        doomed = prune_plan(entries, now, self.cfg)
        for jpg in doomed:
            jpg.unlink(missing_ok=True)
            jpg.with_suffix(".json").unlink(missing_ok=True)
        return len(doomed)

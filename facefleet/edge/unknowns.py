"""Faces kept for curation: the best crop of each unknown track goes to
``few_shot_examples/unknown/`` as a JPEG plus a sidecar JSON (embedding, quality, context).
A sample of the named tracks goes to ``few_shot_examples/named/`` the same way (sidecar
``kind: "named"``), so a stranger a camera named can be collected and labelled ``--not``.

Captures are de-duplicated (a face close to a recent capture is the same face again),
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

LEFTOVER_AGE = 3600.0  # seconds; younger leftovers may be a capture another process is writing


@dataclass
class UnknownConfig:
    dedup_distance: float = 0.5  # closer than this to a recent capture: the same face again
    recent: int = 200  # captures remembered for de-duplication
    min_interval: float = 1.0  # seconds between two new captures
    max_files: int = 500  # oldest captures are removed beyond this
    max_age_days: float = 30.0
    min_quality: float = 0.0  # quality score (0..1) a crop needs
    jpeg_quality: int = 90


def named_sample_config() -> UnknownConfig:
    """Named faces are the common case: sample them more sparsely than unknown ones."""
    # 0.3: the same face again; a stranger named by a small margin sits ~0.5-0.6 from the
    # person, so a sample of the real person does not hide it
    return UnknownConfig(dedup_distance=0.3, recent=200, min_interval=5.0, max_files=200)


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

    def __init__(
        self, folder: Path, cfg: UnknownConfig | None = None, *, device: str = "", kind: str = "unknown"
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg or UnknownConfig()
        self.device = device
        self.kind = kind  # "unknown" | "named": file prefix and the sidecar's "kind"
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
        path = self.folder / f"{self.kind}_{stamp}_{run}_t{track_id}.jpg"
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
            "kind": self.kind,
            "quality_score": round(float(quality), 4),
            "embedding": [round(float(v), 7) for v in np.asarray(embedding).ravel()],
            "image": path.name,
        }
        # the sidecar first: a JPEG is never on disk without its embedding
        atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, ensure_ascii=False))
        atomic_write_bytes(path, jpeg.tobytes())

    def prune(self, now: float | None = None) -> int:
        """Apply the count and age caps; returns how many captures were removed. Also clears
        what a process killed while writing a capture left behind (a sidecar without its
        JPEG, a temporary file), once it is older than ``LEFTOVER_AGE``."""
        now = time.time() if now is None else now
        self._remove_leftovers(now)
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

    def _remove_leftovers(self, now: float) -> None:
        leftovers = [p for p in self.folder.glob(".*.tmp*")]
        leftovers += [p for p in self.folder.glob("*.json") if not p.with_suffix(".jpg").exists()]
        for path in leftovers:
            try:
                if now - path.stat().st_mtime > LEFTOVER_AGE:
                    path.unlink()
            except FileNotFoundError:
                continue

"""Real-time recognition of one frame stream: detect on a downscaled frame every N frames,
track faces between detections, embed a track only when it is new, every K frames, or when a
clearly better view of it appears, and name it by a quality-weighted vote over its history.

Embedding (~100 ms a face with dlib on one core) is the expensive step, so it happens per
track, not per frame; detection (~30 ms on 640 pixels) runs every ``detect_every`` frames.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facefleet.edge.tracker import Box, Track, Tracker
from facefleet.registry.inference import Matcher


@dataclass
class PipelineConfig:
    detect_width: int = 640  # longer side of the copy detection runs on
    detect_every: int = 3  # run the detector on every Nth processed frame
    upsample: int = 0  # HOG upsampling on that copy
    embed_every: int = 30  # re-embed a track after this many frames
    quality_gain: float = 0.08  # ... or when its quality score rises this much over the best
    unknown_looks: int = 4  # an unnamed track is embedded on every detection until this many
    min_face_px: int = 30  # smaller faces are tracked and drawn but never embedded
    max_missed: int = 2  # detection passes a track survives without a match
    crop_margin: float = 0.25  # context around the box kept in crops


@dataclass
class View:
    """One look at a tracked face on a detection frame."""

    frame: int
    box: Box
    landmarks: np.ndarray
    chip: np.ndarray
    quality: Any  # facefleet.vision.quality.Quality
    score: float  # quality.score(), 0..1
    crop: np.ndarray | None = None  # BGR crop around the box (kept for the best view)
    embedding: np.ndarray | None = None


@dataclass
class FrameResult:
    index: int
    detected: bool  # the detector ran on this frame
    tracks: list[Track]  # visible tracks, to draw
    decisions: list[Track]  # tracks whose name was decided or changed on this frame
    ended: list[Track]  # tracks that left the view
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    embedded: int = 0


def vote(votes: dict[str | None, float]) -> str | None:
    """The name with the largest summed weight (None = unknown); ties go to unknown."""
    if not votes:
        return None
    best = max(votes.values())
    winners = [name for name, w in votes.items() if w == best]
    return None if None in winners or len(winners) > 1 else winners[0]


def should_embed(track: Track, view_score: float, frame: int, cfg: PipelineConfig) -> bool:
    """Embed a track when it has no embedding yet, on each of its first looks while it is
    still unnamed, when ``embed_every`` frames passed since its
    last one, or when this view is clearly better than the best one embedded so far."""
    if track.embeddings == 0:
        return True
    if track.name is None and track.embeddings < cfg.unknown_looks:
        return True  # not recognised yet: a few more looks before settling on unknown
    if frame - track.last_embed_frame >= cfg.embed_every:
        return True
    return view_score >= track.best_quality + cfg.quality_gain


def crop_box(shape: tuple[int, ...], box: Box, margin: float) -> Box:
    """``box`` grown by ``margin`` of its size on each side, clipped to the image."""
    h, w = shape[:2]
    left, top, right, bottom = box
    mx, my = (right - left) * margin, (bottom - top) * margin
    return (
        max(0, int(left - mx)),
        max(0, int(top - my)),
        min(w, int(right + mx)),
        min(h, int(bottom + my)),
    )


class Pipeline:
    """Frames in, tracked and named faces out. One per stream; not thread-safe."""

    def __init__(self, engine, model: Matcher, cfg: PipelineConfig | None = None) -> None:
        self.engine = engine
        self.model = model
        self.cfg = cfg or PipelineConfig()
        self.tracker = Tracker(max_missed=self.cfg.max_missed)
        self._processed = 0
        self.embeddings = 0

    def set_model(self, model: Matcher) -> None:
        """Use ``model`` from the next frame on. Tracks keep their boxes but are re-decided:
        their votes came from the old model."""
        self.model = model
        for t in self.tracker.tracks:
            t.votes.clear()
            t.embeddings = 0
            t.best_quality = -1.0
            t.decided = False

    def process(self, bgr: np.ndarray, index: int) -> FrameResult:
        import cv2

        timings: dict[str, float] = {}
        detect_now = self._processed % max(self.cfg.detect_every, 1) == 0
        self._processed += 1
        if not detect_now:
            return FrameResult(index, False, self.tracker.visible(), [], [], timings)

        t0 = time.perf_counter()
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        found = self.engine.detect(rgb, upsample=self.cfg.upsample, max_side=self.cfg.detect_width)
        t1 = time.perf_counter()
        matched, _new, ended = self.tracker.update([d.box for d in found], index)
        t2 = time.perf_counter()
        timings["detect"], timings["track"] = t1 - t0, t2 - t1

        to_embed: list[tuple[Track, View]] = []
        for track in matched:
            view = self._view(rgb, bgr, track.box, index)
            track.view = view
            if view is None:
                continue
            if should_embed(track, view.score, index, self.cfg):
                to_embed.append((track, view))
        t3 = time.perf_counter()
        timings["align"] = t3 - t2

        decisions: list[Track] = []
        if to_embed:
            vectors = self.engine.embed_chips([v.chip for _, v in to_embed])
            t4 = time.perf_counter()
            results = self.model.classify(vectors)
            t5 = time.perf_counter()
            timings["embed"], timings["classify"] = t4 - t3, t5 - t4
            self.embeddings += len(to_embed)
            for (track, view), vec, dec in zip(to_embed, vectors, results, strict=True):
                view.embedding = vec
                if track.best_view is None or view.score > track.best_view.score:
                    view.crop = _crop(bgr, view.box, self.cfg.crop_margin)
                    track.best_view = view
                if self._record(track, view, dec, index):
                    decisions.append(track)
        return FrameResult(
            index, True, self.tracker.visible(), decisions, ended, timings, embedded=len(to_embed)
        )

    def _view(self, rgb: np.ndarray, bgr: np.ndarray, box: Box, index: int) -> View | None:
        from facefleet.vision.quality import measure_quality

        if min(box[2] - box[0], box[3] - box[1]) < self.cfg.min_face_px:
            return None
        points = self.engine.landmarks(rgb, box)
        chip = self.engine.chip(rgb, points, box)
        quality = measure_quality(chip, box, points)
        return View(index, box, points, chip, quality, quality.score())

    def _record(self, track: Track, view: View, decision, index: int) -> bool:
        """Add one classification to the track's vote; True when its name is newly decided
        or changed."""
        track.embeddings += 1
        track.last_embed_frame = index
        track.best_quality = max(track.best_quality, view.score)
        track.votes[decision.name] = track.votes.get(decision.name, 0.0) + max(view.score, 1e-3)
        name = vote(track.votes)
        if name == decision.name or track.candidate is None:
            track.distance, track.score, track.candidate = (
                decision.distance,
                decision.score,
                decision.candidate,
            )
        changed = not track.decided or name != track.name
        track.name, track.decided = name, True
        return changed

    def finish(self) -> list[Track]:
        """End every open track (the source ended)."""
        return self.tracker.flush()


def _crop(bgr: np.ndarray, box: Box, margin: float) -> np.ndarray:
    left, top, right, bottom = crop_box(bgr.shape, box, margin)
    return bgr[top:bottom, left:right].copy()

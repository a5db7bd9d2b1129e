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

from facefleet.edge.tracker import Box, Track, Tracker, mark_crossings
from facefleet.registry.inference import Matcher


@dataclass
class PipelineConfig:
    detect_width: int = 640  # longer side of the copy detection runs on
    detect_every: int | None = None  # detect on every Nth frame; None: default_detect_every()
    upsample: int = 0  # HOG upsampling on that copy
    embed_every: int = 30  # re-embed a track after this many frames ...
    max_embed_every: int = 120  # ... doubling up to this while its re-embeds agree with it
    quality_gain: float = 0.08  # ... or when its quality score rises this much over the best
    unknown_looks: int = 4  # an unnamed track is embedded on every detection until this many
    look_gap: int = 2  # ... at least this many frames apart (detecting every frame gives twins)
    settled_look_gap: int = 12  # a settled track gets a fresh look (landmarks, quality) this often
    confirm_looks: int = 6  # extra looks when the latest decision disagrees with the vote
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


def default_detect_every(detector: str) -> int:
    """Detect every 2nd frame with BlazeFace (a few ms), every 3rd with HOG (~15-20 ms). On one
    core, BlazeFace on every frame names faces no sooner and costs ~40 % of the throughput
    (bench/bench_edge.py)."""
    return 2 if detector.startswith("blazeface") else 3


def vote(votes: dict[str | None, float]) -> str | None:
    """The name with the largest summed weight (None = unknown); ties go to unknown."""
    if not votes:
        return None
    best = max(votes.values())
    winners = [name for name, w in votes.items() if w == best]
    return None if None in winners or len(winners) > 1 else winners[0]


def should_embed(track: Track, view_score: float, frame: int, cfg: PipelineConfig) -> bool:
    """Embed a track when it has no embedding yet, on each of its first looks while it is
    still unnamed (``look_gap`` frames apart), while its latest decision disagrees with its
    vote (a face that turned towards the camera: confirm it quickly rather than wait for
    ``embed_every``), when its periodic re-check is due (``embed_every`` frames, doubling while
    the re-checks agree), when it has just come apart from another track it touched (where
    trackers swap identities), or when this view is clearly better than the best one embedded
    so far."""
    if track.embeddings == 0 or track.crossed:
        return True
    spaced = frame - track.last_embed_frame >= cfg.look_gap
    if track.name is None and track.embeddings < cfg.unknown_looks and spaced:
        return True  # not recognised yet: a few more looks before settling on unknown
    if track.last_name != track.name and track.embeddings < cfg.unknown_looks + cfg.confirm_looks and spaced:
        return True
    if frame - track.last_embed_frame >= (track.recheck_every or cfg.embed_every):
        return True
    gain = cfg.quality_gain / 2 if track.name is None else cfg.quality_gain  # unnamed: look sooner
    return view_score >= track.best_quality + gain


def wants_view(track: Track, frame: int, cfg: PipelineConfig) -> bool:
    """Whether a detected track gets a fresh view (landmarks, chip, quality: the ~2 ms a face
    that dominates a crowded frame) now. Every ``look_gap`` frames while it is new, unnamed or
    being confirmed; once settled (named with a consistent vote, or unknown after its looks),
    every ``settled_look_gap`` frames, or when ``embed_every`` is due. A settled track only
    needs views for the quality-gain check, which then fires at most that much later."""
    last = track.view
    if track.embeddings == 0 or last is None:
        return True
    since = frame - last.frame
    if since < cfg.look_gap:
        return False
    settled = track.decided and track.last_name == track.name
    if track.name is None:
        settled = settled and track.embeddings >= cfg.unknown_looks
    if not settled:
        return True
    if track.crossed:
        return True
    due = track.recheck_every or cfg.embed_every
    return since >= cfg.settled_look_gap or frame - track.last_embed_frame >= due


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
        # the detector the engine really has (BlazeFace falls back to HOG when unavailable)
        self.detect_every = self.cfg.detect_every or default_detect_every(
            getattr(getattr(engine, "_detector", None), "name", "hog")
        )
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
            t.recheck_every = 0
            t.decided = False
            t.last_name = None

    def process(self, bgr: np.ndarray, index: int, *, independent: bool = False) -> FrameResult:
        """One frame. ``independent`` frames (photos of a folder) share no tracks: each is
        detected, and the tracks of the previous one end before it."""
        import cv2

        timings: dict[str, float] = {}
        earlier = self.tracker.flush() if independent else []
        detect_now = independent or self._processed % max(self.detect_every, 1) == 0
        self._processed += 1
        if not detect_now:
            return FrameResult(index, False, self.tracker.visible(), [], [], timings)

        t0 = time.perf_counter()
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        found = self.engine.detect(rgb, upsample=self.cfg.upsample, max_side=self.cfg.detect_width)
        t1 = time.perf_counter()
        matched, _new, ended = self.tracker.update([d.box for d in found], index)
        mark_crossings(self.tracker.visible())
        ended = earlier + ended
        t2 = time.perf_counter()
        timings["detect"], timings["track"] = t1 - t0, t2 - t1

        to_embed: list[tuple[Track, View]] = []
        for track in matched:
            if not wants_view(track, index, self.cfg):
                continue
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
        every = track.recheck_every or self.cfg.embed_every
        if track.crossed or (track.embeddings and decision.name != track.name):
            track.recheck_every = self.cfg.embed_every  # crossed, or it disagreed: check often again
        elif track.embeddings and index - track.last_embed_frame >= every:
            track.recheck_every = min(2 * every, self.cfg.max_embed_every)  # a periodic check agreed
        track.crossed = False
        track.embeddings += 1
        track.last_embed_frame = index
        track.best_quality = max(track.best_quality, view.score)
        track.votes[decision.name] = track.votes.get(decision.name, 0.0) + max(view.score, 1e-3)
        track.last_name = decision.name
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

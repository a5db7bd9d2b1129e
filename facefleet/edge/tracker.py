"""Face tracking across frames: greedy IoU matching, with a centroid-distance fallback for
fast moves, so a face keeps one identity (and one embedding history) while it stays in view.

Pure Python over boxes; no image work here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

Box = tuple[int, int, int, int]  # left, top, right, bottom


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when they do not touch)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def centroid_distance(a: Box, b: Box) -> float:
    """Distance between box centres, in units of the larger box's diagonal."""
    ax, ay = (a[0] + a[2]) / 2, (a[1] + a[3]) / 2
    bx, by = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    diag = max(math.hypot(a[2] - a[0], a[3] - a[1]), math.hypot(b[2] - b[0], b[3] - b[1]), 1.0)
    return math.hypot(ax - bx, ay - by) / diag


def match(
    tracks: list[Box], detections: list[Box], *, min_iou: float = 0.3, max_centroid: float = 0.6
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Greedy assignment of detections to tracks: best IoU pairs first, then the remaining
    pairs by nearest centre. Returns (pairs (track, detection), unmatched tracks,
    unmatched detections)."""
    pairs: list[tuple[int, int]] = []
    free_t, free_d = set(range(len(tracks))), set(range(len(detections)))
    by_iou = sorted(
        ((iou(t, d), ti, di) for ti, t in enumerate(tracks) for di, d in enumerate(detections)),
        reverse=True,
    )
    for score, ti, di in by_iou:
        if score < min_iou:
            break
        if ti in free_t and di in free_d:
            pairs.append((ti, di))
            free_t.discard(ti)
            free_d.discard(di)
    by_centre = sorted(
        (centroid_distance(tracks[ti], detections[di]), ti, di) for ti in free_t for di in free_d
    )
    for dist, ti, di in by_centre:
        if dist > max_centroid:
            break
        if ti in free_t and di in free_d:
            pairs.append((ti, di))
            free_t.discard(ti)
            free_d.discard(di)
    return pairs, sorted(free_t), sorted(free_d)


@dataclass(eq=False)  # identity, not field equality: tracks hold arrays
class Track:
    """One face followed over frames, with the recognition state the pipeline keeps on it."""

    id: int
    box: Box
    first_frame: int
    last_seen: int  # frame index of the last matching detection
    hits: int = 1
    missed: int = 0  # detection passes without a match
    # recognition state (filled by the pipeline)
    votes: dict[str | None, float] = field(default_factory=dict)
    name: str | None = None
    distance: float = float("nan")
    score: float = 0.0
    candidate: str | None = None
    best_quality: float = -1.0
    last_embed_frame: int = -(10**9)
    recheck_every: int = 0  # frames until the next periodic re-embed (0: the pipeline's embed_every)
    touching: bool = False  # its box overlaps another visible track's
    crossed: bool = False  # it touched another track and came apart since its last embedding
    embeddings: int = 0
    last_name: str | None = None  # the latest classification alone (the vote may disagree)
    decided: bool = False  # an event was written for the current name
    best_view: object = None  # the embedded View with the highest quality score so far
    view: object = None  # the latest View (landmarks, quality) on a detection frame

    @property
    def age(self) -> int:
        return self.last_seen - self.first_frame + 1


def mark_crossings(tracks: list[Track], min_iou: float = 0.1) -> None:
    """Set ``touching`` on the tracks whose boxes overlap another's by ``min_iou`` or more,
    and ``crossed`` on those that just came apart: a crossing is where a tracker swaps
    identities, so the pipeline re-checks who they are once they part (not while they
    overlap: one face hides the other). Neighbours whose boxes merely graze do not count."""
    for a in tracks:
        touching = any(b is not a and iou(a.box, b.box) >= min_iou for b in tracks)
        if a.touching and not touching:
            a.crossed = True
        a.touching = touching


class Tracker:
    """Keeps tracks alive across detection passes; drops one after ``max_missed`` passes
    without a match."""

    def __init__(self, *, min_iou: float = 0.3, max_centroid: float = 0.6, max_missed: int = 3):
        self.min_iou = min_iou
        self.max_centroid = max_centroid
        self.max_missed = max_missed
        self.tracks: list[Track] = []
        self._next_id = 1

    @property
    def next_id(self) -> int:
        """The id the next new track gets."""
        return self._next_id

    def start_ids_at(self, first: int) -> None:
        """Number new tracks from ``first`` on (a restarted run keeps its track ids unique)."""
        self._next_id = max(self._next_id, int(first))

    def update(self, boxes: list[Box], frame: int) -> tuple[list[Track], list[Track], list[Track]]:
        """Match this frame's detections; returns (matched-or-new tracks in detection order,
        new tracks, tracks that ended)."""
        pairs, lost, fresh = match(
            [t.box for t in self.tracks],
            boxes,
            min_iou=self.min_iou,
            max_centroid=self.max_centroid,
        )
        by_det: dict[int, Track] = {}
        for ti, di in pairs:
            t = self.tracks[ti]
            t.box, t.last_seen, t.hits, t.missed = boxes[di], frame, t.hits + 1, 0
            by_det[di] = t
        ended: list[Track] = []
        for ti in lost:
            t = self.tracks[ti]
            t.missed += 1
            if t.missed > self.max_missed:
                ended.append(t)
        new: list[Track] = []
        for di in fresh:
            t = Track(id=self._next_id, box=boxes[di], first_frame=frame, last_seen=frame)
            self._next_id += 1
            new.append(t)
            by_det[di] = t
        self.tracks = [t for t in self.tracks if t not in ended] + new
        return [by_det[i] for i in range(len(boxes))], new, ended

    def visible(self) -> list[Track]:
        """Tracks seen at the last detection pass (the ones to draw)."""
        return [t for t in self.tracks if t.missed == 0]

    def flush(self) -> list[Track]:
        """End every track (source finished)."""
        ended, self.tracks = self.tracks, []
        return ended

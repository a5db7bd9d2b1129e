"""The pure parts of the edge: tracking, voting, embed scheduling, unknown caps, event rows,
percentiles, display detection."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np

from facefleet.edge.events import FACELIST_COLUMNS, eye_geometry, facelist_row
from facefleet.edge.pipeline import Pipeline, PipelineConfig, crop_box, should_embed, vote, wants_view
from facefleet.edge.recognize import display_problem
from facefleet.edge.stats import format_table, percentile
from facefleet.edge.tracker import Track, Tracker, centroid_distance, iou, mark_crossings, match
from facefleet.edge.unknowns import UnknownCollector, UnknownConfig, nearest_distance, prune_plan


def test_iou_and_centroid():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == 50 / 150
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert centroid_distance((0, 0, 10, 10), (0, 0, 10, 10)) == 0.0


def test_match_prefers_iou_then_nearest_centre():
    tracks = [(0, 0, 50, 50), (200, 0, 250, 50)]
    dets = [(205, 2, 255, 52), (30, 0, 80, 50), (600, 600, 650, 650)]
    pairs, lost, fresh = match(tracks, dets)
    # track 1 matches by IoU (0.70); track 0 only by its centre (IoU 0.25 < 0.3)
    assert sorted(pairs) == [(0, 1), (1, 0)]
    assert lost == [] and fresh == [2]


def test_tracker_keeps_identity_and_ends_lost_tracks():
    tr = Tracker(max_missed=1)
    first, new, _ = tr.update([(0, 0, 50, 50)], 0)
    assert new == first
    moved, new, _ = tr.update([(8, 0, 58, 50)], 3)
    assert moved[0] is first[0] and new == [] and first[0].hits == 2
    _, _, ended = tr.update([], 6)
    assert ended == [] and tr.visible() == []
    _, _, ended = tr.update([], 9)
    assert ended == [first[0]] and tr.tracks == []


def test_vote_weights_and_ties():
    assert vote({}) is None
    assert vote({"a": 1.0, None: 0.5}) == "a"
    assert vote({"a": 0.4, None: 0.5}) is None
    assert vote({"a": 0.5, "b": 0.5}) is None


def test_should_embed_schedule():
    cfg = PipelineConfig(embed_every=30, quality_gain=0.1, unknown_looks=3, look_gap=3)
    t = Track(id=1, box=(0, 0, 10, 10), first_frame=0, last_seen=0)
    assert should_embed(t, 0.5, 0, cfg)  # new
    t.embeddings, t.last_embed_frame, t.best_quality, t.name, t.last_name = 1, 0, 0.5, "a", "a"
    assert not should_embed(t, 0.55, 3, cfg)
    assert should_embed(t, 0.61, 3, cfg)  # clearly better view
    assert should_embed(t, 0.5, 30, cfg)  # periodic
    t.name = None
    assert should_embed(t, 0.5, 3, cfg)  # unnamed and young: look again
    assert not should_embed(t, 0.5, 2, cfg)  # ... but not on the very next frames
    t.embeddings, t.last_embed_frame, t.last_name = 3, 10, "a"  # unknown so far, then a match
    assert not should_embed(t, 0.5, 12, cfg)
    assert should_embed(t, 0.5, 13, cfg)  # confirm the disagreeing decision soon
    t.last_name = None
    assert not should_embed(t, 0.5, 13, cfg)  # settled on unknown: wait for embed_every
    t.embeddings, t.last_name = 3 + cfg.confirm_looks, "a"
    assert not should_embed(t, 0.5, 13, cfg)  # confirmation is bounded


def test_settled_tracks_get_fewer_views_and_back_off_their_rechecks():
    cfg = PipelineConfig(embed_every=30, max_embed_every=120, unknown_looks=3, look_gap=2, settled_look_gap=6)
    t = Track(id=1, box=(0, 0, 10, 10), first_frame=0, last_seen=0)
    assert wants_view(t, 0, cfg)  # new
    t.view = SimpleNamespace(frame=10)
    t.embeddings, t.last_embed_frame, t.decided, t.name, t.last_name = 1, 10, True, None, None
    assert not wants_view(t, 11, cfg) and wants_view(t, 12, cfg)  # unknown, still looking
    t.embeddings = 3
    assert not wants_view(t, 12, cfg) and wants_view(t, 16, cfg)  # settled on unknown
    t.name, t.last_name, t.embeddings = "a", "b", 1
    assert wants_view(t, 12, cfg)  # latest look disagrees: not settled
    t.last_name = "a"
    assert not wants_view(t, 15, cfg) and wants_view(t, 40, cfg)  # periodic re-check due
    t.crossed = True
    assert wants_view(t, 12, cfg) and should_embed(t, 0.0, 12, cfg)

    # the periodic re-check doubles while it agrees, and resets when it does not
    pipe = Pipeline(SimpleNamespace(), None, cfg)
    u = Track(id=2, box=(0, 0, 10, 10), first_frame=0, last_seen=0)
    view = SimpleNamespace(score=0.5)
    said = lambda name: SimpleNamespace(name=name, distance=0.3, score=0.1, candidate=name)  # noqa: E731
    pipe._record(u, view, said("a"), 0)
    assert u.recheck_every == 0
    pipe._record(u, view, said("a"), 30)
    assert u.recheck_every == 60
    pipe._record(u, view, said("a"), 90)
    pipe._record(u, view, said("a"), 210)
    assert u.recheck_every == 120  # capped
    pipe._record(u, view, said("b"), 215)
    assert u.recheck_every == 30
    u.crossed = True
    pipe._record(u, view, said("a"), 216)
    assert u.recheck_every == 30 and not u.crossed


def test_tracks_that_part_after_touching_are_marked_crossed():
    a = Track(id=1, box=(0, 0, 10, 10), first_frame=0, last_seen=0)
    b = Track(id=2, box=(20, 0, 30, 10), first_frame=0, last_seen=0)
    mark_crossings([a, b])
    assert not (a.touching or a.crossed or b.touching)
    b.box = (8, 0, 18, 10)
    mark_crossings([a, b])
    assert a.touching and b.touching and not (a.crossed or b.crossed)
    b.box = (25, 0, 35, 10)
    mark_crossings([a, b])
    assert a.crossed and b.crossed and not a.touching


def test_crop_box_clips():
    assert crop_box((100, 100, 3), (10, 10, 50, 50), 0.25) == (0, 0, 60, 60)
    assert crop_box((100, 100, 3), (80, 80, 99, 99), 0.5) == (70, 70, 100, 100)


def test_prune_plan_age_then_count():
    cfg = UnknownConfig(max_files=2, max_age_days=1)
    now = 10 * 86400.0
    entries = [(f"old{i}", now - 2 * 86400) for i in range(2)]
    entries += [(f"new{i}", now - i) for i in range(4)]
    doomed = prune_plan(entries, now, cfg)
    assert set(doomed) == {"old0", "old1", "new3", "new2"}


def test_unknown_collector_dedup_rate_and_upgrade(tmp_path):
    col = UnknownCollector(tmp_path, UnknownConfig(dedup_distance=0.5, min_interval=1.0))
    crop = np.full((40, 40, 3), 128, np.uint8)
    a, b = np.zeros(128, np.float32), np.full(128, 0.2, np.float32)  # |a - b| = 2.26
    p1 = col.offer(run="r", track_id=1, crop=crop, embedding=a, quality=0.3, info={}, now=100.0)
    assert p1 is not None and p1.is_file()
    assert (
        col.offer(run="r", track_id=2, crop=crop, embedding=a + 0.01, quality=0.9, info={}, now=200.0) is None
    )  # same face again
    assert (
        col.offer(run="r", track_id=3, crop=crop, embedding=b, quality=0.9, info={}, now=100.5) is None
    )  # too soon
    assert (
        col.offer(run="r", track_id=1, crop=crop, embedding=a, quality=0.6, info={}, now=300.0) == p1
    )  # better crop of the same track replaces its files
    assert json.loads(p1.with_suffix(".json").read_text())["quality_score"] == 0.6
    assert col.saved == 1 and col.skipped_duplicate == 1 and col.skipped_rate == 1
    # a restart remembers what it saw
    again = UnknownCollector(tmp_path, UnknownConfig(dedup_distance=0.5))
    assert nearest_distance(a, np.array(again._recent)) < 1e-6


def test_leftovers_of_a_killed_capture_are_cleared(tmp_path):
    """A process killed between a capture's sidecar and its JPEG (or inside an atomic write)
    leaves files no reader uses: the next collector removes them once they are old."""
    import os

    kept = tmp_path / "unknown_a.jpg"
    kept.write_bytes(b"jpeg")
    kept.with_suffix(".json").write_text("{}")
    orphan = tmp_path / "unknown_b.json"
    orphan.write_text("{}")
    tmp = tmp_path / ".unknown_c.jpg.tmp123"
    tmp.write_bytes(b"half")
    fresh = tmp_path / "unknown_d.json"  # another process may be writing this one right now
    fresh.write_text("{}")
    for path in (kept, kept.with_suffix(".json"), orphan, tmp):
        os.utime(path, (1000.0, 1000.0))
    UnknownCollector(tmp_path, UnknownConfig(max_age_days=1e9))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unknown_a.jpg", "unknown_a.json", "unknown_d.json"]


def test_facelist_row_matches_columns():
    pts = np.array([[60, 40], [50, 40], [20, 40], [30, 40], [40, 60]], np.float32)
    eyes = eye_geometry(pts)
    assert eyes["rx"] == 55.0 and eyes["lx"] == 25.0 and abs(eyes["angle"]) == 180.0
    event = {
        "ts": "2026-01-02T03:04:05.000+00:00",
        "run": "abc",
        "track_id": 4,
        "source": "usb:0",
        "name": None,
        "score": 0.7,
        "distance": 0.8,
        "margin": -0.2,
        "box": [1, 2, 3, 4],
        "landmarks": pts.tolist(),
        "quality": {"sharpness": 42.0},
    }
    row = dict(zip(FACELIST_COLUMNS, facelist_row(event), strict=True))
    assert row["date"] == "2026-01-02" and row["status"] == "unknown"
    assert row["name"] == "Unknown" and row["focus"] == 42.0 and row["x2"] == 3


def test_percentile_and_table():
    assert percentile([], 50) == 0.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(101)), 95) == 95
    text = format_table(
        {
            "frames": 1,
            "seconds": 1.0,
            "fps": 1.0,
            "embeddings": 0,
            "embeddings_per_s": 0.0,
            "cpu_percent": 5.0,
            "peak_rss_mb": 10.0,
            "dropped_frames": 0,
            "stages": {"detect": {"count": 1, "p50_ms": 1, "p95_ms": 2, "max_ms": 3}},
        }
    )
    assert "detect" in text and "FPS" in text


def test_display_problem():
    assert "headless" in display_problem("  GUI: NONE\n", {"DISPLAY": ":0"})
    assert "DISPLAY" in display_problem("  GUI: GTK3\n", {})
    assert display_problem("  GUI: GTK3\n", {"DISPLAY": ":0"}) is None

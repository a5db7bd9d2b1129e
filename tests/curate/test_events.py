"""Events (curate.events) on a real collection: both cameras' runs of the pbs clip collected
into a copy of the base workspace, then filtered, paged and reviewed."""

from __future__ import annotations

import pytest

from facefleet.curate import labels
from facefleet.curate.collect import collect
from facefleet.curate.events import EventFilter, event_devices, list_events


@pytest.fixture
def collected(base_ws, camera_runs, copy_workspace):
    ws = copy_workspace(base_ws[0])
    collect(ws, list(camera_runs.values()))
    store = ws.open_store()
    yield store
    store.close()


def test_events_filter_page_and_show_what_a_reviewer_said(collected):
    st = collected
    everything, total = list_events(st, limit=1000)
    assert total == len(everything) >= 4
    assert event_devices(st) == ["cam1", "cam2"]
    # newest first, and every one is a capture the device could not name
    whens = [e.when for e in everything]
    assert whens == sorted(whens, reverse=True)
    assert all(e.name is None and e.candidate and e.distance is not None for e in everything)
    assert list_events(st, EventFilter(kind="known"))[1] == 0
    assert list_events(st, EventFilter(kind="unknown"))[1] == total

    cam1, n1 = list_events(st, EventFilter(device="cam1"), limit=1000)
    assert n1 == sum(e.device == "cam1" for e in everything) and {e.device for e in cam1} == {"cam1"}
    # pages: consecutive, no face twice, same order as one long page
    pages = [list_events(st, offset=o, limit=3)[0] for o in range(0, total, 3)]
    assert [e.face_id for p in pages for e in p] == [e.face_id for e in everything]

    first, last = everything[-1].when[:10], everything[0].when[:10]
    assert list_events(st, EventFilter(since=first, until=last))[1] == total
    assert list_events(st, EventFilter(until="2000-01-01"))[1] == 0

    like = everything[0].candidate
    assert list_events(st, EventFilter(person=like))[1] == sum(e.candidate == like for e in everything)

    # a reviewer names one face and keeps another as a stranger: the events say so
    named, kept = everything[0].face_id, everything[1].face_id
    labels.label(st, [named], "visitor_one")
    labels.stranger(st, [kept])
    after = {e.face_id: e for e in list_events(st, limit=1000)[0]}
    assert after[named].person == "visitor_one" and not after[named].reviewed_stranger
    assert after[kept].person is None and after[kept].reviewed_stranger
    assert sum(e.reviewed_stranger for e in after.values()) == 1  # unreviewed captures are not
    assert [e.face_id for e in list_events(st, EventFilter(person="visitor_one"))[0]] == [named]

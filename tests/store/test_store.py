"""The SQLite identity store: people, faces, embeddings, transactions, training sets."""

from __future__ import annotations

import numpy as np
import pytest

from facefleet.errors import StoreError
from facefleet.store import Store


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "s.db") as s:
        yield s


def _vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return v / np.linalg.norm(v)


def _face(store: Store, name: str | None, seed: int, status: str = "in_use") -> int:
    image_id, _ = store.add_image(f"/x/{seed}.jpg", sha256=f"{seed:064x}")
    person_id = store.add_person(name) if name else None
    face_id = store.add_face(image_id, person_id=person_id, box=(0, 0, 50, 50), status=status)
    store.add_embedding(face_id, "emb-a", _vec(seed))
    return face_id


def test_people_crud(store):
    pid = store.add_person("Ada Lovelace")
    assert pid.startswith("p") and store.add_person("Ada Lovelace") == pid
    assert store.person("Ada Lovelace").id == pid and store.person(pid).name == "Ada Lovelace"
    store.rename_person(pid, "Ada")
    assert [p.name for p in store.people()] == ["Ada"]
    store.add_person("Bob")
    with pytest.raises(StoreError, match="already exists"):
        store.rename_person("Ada", "Bob")
    with pytest.raises(StoreError, match="no person"):
        store.person("nobody")
    with pytest.raises(StoreError, match="invalid person name"):
        store.add_person("  ")


def test_training_set_filters_status_and_embedder(store):
    a1, _a2, b1 = _face(store, "a", 1), _face(store, "a", 2), _face(store, "b", 3)
    _face(store, "b", 4, status="candidate")
    _face(store, None, 5, status="selected")  # a reviewed stranger
    ts = store.training_set("emb-a")
    assert ts.names == ["a", "a", "b"] and ts.X.shape == (3, 128)
    assert ts.face_ids[0] == a1 and ts.face_ids[2] == b1
    assert np.allclose(ts.X[0], _vec(1))
    assert len(store.training_set("emb-other")) == 0
    assert store.stranger_set("emb-a").shape == (1, 128)
    store.add_negative(b1, store.person("a").id)
    X, names = store.negative_set("emb-a")
    assert names == ["a"] and np.allclose(X[0], _vec(3))


def test_transaction_rolls_back_everything(store):
    with pytest.raises(RuntimeError), store.transaction():
        store.add_person("ghost")
        _face(store, "ghost2", 9)
        raise RuntimeError("boom")
    assert store.people() == [] and store.faces() == []


def test_bad_embedding_and_status_are_refused(store):
    face_id = _face(store, "a", 1)
    with pytest.raises(StoreError, match="128 finite"):
        store.add_embedding(face_id, "e", np.zeros(64))
    with pytest.raises(StoreError, match="128 finite"):
        store.add_embedding(face_id, "e", np.full(128, np.nan))
    with pytest.raises(StoreError, match="unknown face status"):
        store.set_status([face_id], "maybe")


def test_same_image_hash_is_one_row(store):
    first = store.add_image("/a.jpg", sha256="f" * 64)
    again = store.add_image("/b.jpg", sha256="f" * 64)
    assert first == (first[0], True) and again == (first[0], False)


def _state(store) -> tuple:
    """Everything a merge touches, by name: people, faces' owners, "not" marks, clusters."""
    q = store.conn.execute
    return (
        sorted(tuple(r) for r in q("SELECT id, name, created FROM people")),
        sorted(tuple(r) for r in q("SELECT id, person_id FROM faces")),
        sorted(tuple(r) for r in q("SELECT face_id, person_id, created FROM negatives")),
        sorted(tuple(r) for r in q("SELECT id, person_id FROM curate_clusters")),
        sorted(tuple(r) for r in q("SELECT person_id, other_id, created FROM lookalike_accepts")),
    )


def test_merge_moves_one_name_into_the_other_and_unmerge_takes_it_back(store):
    from facefleet.curate import clusters as cl
    from facefleet.store import merges
    from facefleet.train import lookalikes

    a1, a2, b1 = _face(store, "ann", 1), _face(store, "ann", 2), _face(store, "ann_again", 3)
    other = _face(store, "bob", 4)
    ann, again, bob = (store.person(n).id for n in ("ann", "ann_again", "bob"))
    store.add_negative(b1, ann)  # a reviewer once said this face was not ann: wrong, it is
    store.add_negative(a1, again)  # the same mark both ways: a duplicate once merged
    store.add_negative(a1, ann)  # ... already there under the name that stays
    store.add_negative(other, again)  # bob's face is not ann: still true after the merge
    store.ensure_schema(cl.SCHEMA)
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO curate_clusters (id, created, state, person_id) VALUES (1, 'x', 'labelled', ?)",
            (again,),
        )
    lookalikes.accept(store, "ann_again", "bob")  # two people, compared: still true after the merge
    before = _state(store)
    with pytest.raises(StoreError, match="same person"):
        merges.merge(store, "ann", ann)
    m = merges.merge(store, "ann_again", "ann")
    assert (m.faces, m.name, m.into_name, m.holder_id) == (1, "ann_again", "ann", ann)
    assert [p.name for p in store.people()] == ["ann", "bob"]
    assert sorted(f.id for f in store.faces(person=ann)) == [a1, a2, b1]
    negs = store.conn.execute("SELECT face_id, person_id FROM negatives ORDER BY face_id").fetchall()
    assert [tuple(r) for r in negs] == [(other, ann)]
    assert store.conn.execute("SELECT person_id FROM curate_clusters").fetchone()[0] == ann
    assert store.training_set("emb-a").names == ["ann", "ann", "ann", "bob"]
    assert lookalikes.accepted_pairs(store) == {frozenset({"ann", "bob"})}
    with pytest.raises(StoreError, match="no person"):
        merges.merge(store, "ann_again", "ann")
    assert [x.id for x in merges.merges(store, held_by=ann)] == [m.id]

    # undone: every face, mark and cluster is back where it was, under the old id and name
    back = merges.unmerge(store, "ann_again")
    assert (back.faces, back.holder_name) == (1, "ann") and back.undone
    assert _state(store) == before
    assert merges.merges(store, held_by=ann) == []
    with pytest.raises(StoreError, match="no merge 'ann_again'"):
        merges.unmerge(store, "ann_again")
    with pytest.raises(StoreError, match="was undone"):
        merges.unmerge(store, str(m.id))


def test_unmerge_follows_later_merges_and_leaves_what_moved_since(store):
    from facefleet.store import merges

    a, b, c = _face(store, "a", 1), _face(store, "b", 2), _face(store, "c", 3)
    a2, d = _face(store, "a", 4), _face(store, "d", 5)
    merges.merge(store, "a", "b")
    merges.merge(store, "b", "c")  # a's faces are now c's
    store.set_person([a2], store.person("d").id)  # a reviewer gave one of them to d since
    assert [m.holder_name for m in merges.merges(store)] == ["c", "c"]
    back = merges.unmerge(store, "a")
    assert (back.faces, back.holder_name) == (1, "c")
    owner = {f.id: f.person_name for f in store.faces()}
    assert owner == {a: "a", b: "c", c: "c", a2: "d", d: "d"}
    # a name taken again must be renamed first
    merges.merge(store, "a", "d")
    store.add_person("a")
    with pytest.raises(StoreError, match="named 'a' again"):
        merges.unmerge(store, "a")
    assert store.face(a).person_name == "d"
    # whom it went into removed since, faces and all: nothing to take back, nothing changed
    store.remove_person("a")
    store.remove_person("d")
    with pytest.raises(StoreError, match="d has been removed since"):
        merges.unmerge(store, "a")
    assert store.find_person("a") is None
    assert [m.holder_name for m in merges.merges(store)][0] is None


def test_remove_person_deletes_their_faces(store):
    _face(store, "a", 1)
    _face(store, "b", 2)
    assert store.remove_person("a") == 1
    assert [f.person_name for f in store.faces()] == ["b"]

"""The signed bundle: keys, write/pack/unpack/verify, tamper refusal, numpy SVM == sklearn."""

from __future__ import annotations

import io
import json
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from facefleet.errors import BundleError, FacefleetError
from facefleet.registry.format import pack_bundle, unpack_bundle, verify_bundle, write_bundle
from facefleet.registry.inference import load_bundle
from facefleet.registry.keys import generate_keypair, load_private_key, load_public_key

EMBEDDER = "test-embedder:0123456789abcdef"


def clustered(n_people: int, per: int, dim: int = 16, seed: int = 0, spread: float = 0.25):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_people, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    X = np.repeat(centres, per, axis=0) + spread * rng.normal(size=(n_people * per, dim)) / np.sqrt(dim)
    y = np.repeat(np.arange(n_people), per)
    return X.astype(np.float32), y


@pytest.fixture
def keys(tmp_path):
    priv, pub = generate_keypair(tmp_path / "keys")
    return load_private_key(priv), load_public_key(pub)


def make_bundle(out: Path, private, method: str = "centroid", svm=None, X=None, y=None, open_set=None):
    if X is None:
        X, y = clustered(3, 4)
    labels = [f"p{i}" for i in range(int(y.max()) + 1)]
    arrays = {
        "gallery": X,
        "gallery_labels": y.astype(np.int32),
        "centroids": np.stack([X[y == c].mean(0) for c in range(len(labels))]),
        "temperature": np.asarray(0.1),
    }
    if svm is not None:
        from facefleet.train.classifier import svm_arrays

        arrays.update(svm_arrays(svm))
    manifest = {
        "format": 1,
        "model": "face_model",
        "version": 7,
        "name": "gamma4",
        "embedder_id": EMBEDDER,
        "labels": labels,
        "thresholds": dict.fromkeys(labels, 0.5),
        "method": method,
        "metrics": {"cv_accuracy": 1.0},
        "created": "2024-01-01T00:00:00Z",
    }
    if open_set is not None:
        manifest["open_set"] = open_set
    return write_bundle(
        out,
        manifest=manifest,
        arrays=arrays,
        private_key=private,
        extra_files={"config.yaml": b"parameters: {}\n"},
    )


def test_keypair_private_is_owner_only_and_not_overwritten(tmp_path):
    priv, pub = generate_keypair(tmp_path / "k")
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert b"PRIVATE" not in pub.read_bytes()
    with pytest.raises(FacefleetError, match="already exists"):
        generate_keypair(tmp_path / "k")
    before = priv.read_bytes()
    generate_keypair(tmp_path / "k", overwrite=True)
    assert priv.read_bytes() != before
    with pytest.raises(BundleError, match="not a usable PEM"):
        load_public_key(b"not a key")


def test_roundtrip_dir_and_tar(tmp_path, keys):
    private, public = keys
    d = make_bundle(tmp_path / "b", private)
    names = sorted(p.name for p in d.iterdir())
    assert names == ["config.yaml", "manifest.json", "manifest.sig", "model.npz"]
    manifest = verify_bundle(d, public)
    assert set(manifest["files"]) == {"model.npz", "config.yaml"}
    assert len((d / "manifest.sig").read_bytes()) == 64
    raw = (d / "manifest.json").read_bytes()
    assert raw == (json.dumps(json.loads(raw), sort_keys=True, indent=1) + "\n").encode()
    tar = pack_bundle(d, tmp_path / "out" / "face_model.tar.gz")
    assert verify_bundle(tar, public) == manifest
    b = load_bundle(tar, public, expected_embedder_id=EMBEDDER)
    assert (b.version, b.name, b.embedder_id, b.labels) == (7, "gamma4", EMBEDDER, ["p0", "p1", "p2"])
    X, y = clustered(3, 4)
    decisions = b.classify(X)
    assert [d.candidate for d in decisions] == [f"p{i}" for i in y]
    assert all(0 < d.score <= 1 for d in decisions)
    far = b.classify(np.full((1, 16), 5.0, np.float32))[0]
    assert far.name is None and far.distance > 0.5
    again = unpack_bundle(tar, tmp_path / "unpacked")
    assert verify_bundle(again, public) == manifest


@pytest.mark.parametrize("target", ["manifest.json", "model.npz", "manifest.sig", "config.yaml"])
def test_flipped_byte_is_refused(tmp_path, keys, target):
    private, public = keys
    d = make_bundle(tmp_path / "b", private)
    data = bytearray((d / target).read_bytes())
    data[len(data) // 2] ^= 0x01
    (d / target).write_bytes(bytes(data))
    reason = "checksum mismatch" if target in ("model.npz", "config.yaml") else "signature"
    with pytest.raises(BundleError, match=reason):
        verify_bundle(d, public)
    with pytest.raises(BundleError, match=reason):
        load_bundle(d, public)
    tar = pack_bundle(d, tmp_path / "b.tar.gz")
    with pytest.raises(BundleError, match=reason):
        load_bundle(tar, public)


def test_other_key_extra_file_and_embedder_are_refused(tmp_path, keys):
    private, public = keys
    d = make_bundle(tmp_path / "b", private)
    _, other_pub = generate_keypair(tmp_path / "other")
    with pytest.raises(BundleError, match="signature"):
        verify_bundle(d, load_public_key(other_pub))
    with pytest.raises(BundleError, match="made for embedder"):
        load_bundle(d, public, expected_embedder_id="dlib-resnet-v1:ffffffffffffffff")
    (d / "evil.py").write_text("print('hi')")
    with pytest.raises(BundleError, match="not listed"):
        verify_bundle(d, public)
    with pytest.raises(BundleError, match="no such bundle"):
        load_bundle(tmp_path / "missing", public)


def _tar_with(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "folder", "device"])
def test_unsafe_archives_are_refused(tmp_path, kind):
    info = tarfile.TarInfo(
        {"dotdot": "../escape", "absolute": "/tmp/abs", "folder": "sub/model.npz"}.get(kind, "model.npz")
    )
    data: bytes | None = b"x"
    if kind == "symlink":
        info.type, info.linkname, data = tarfile.SYMTYPE, "/etc/passwd", None
    elif kind == "device":
        info.type, data = tarfile.CHRTYPE, None
    else:
        info.size = 1
    tar = _tar_with(tmp_path / "bad.tar.gz", [(info, data)])
    with pytest.raises(BundleError, match="refusing"):
        unpack_bundle(tar, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    assert not (tmp_path.parent / "escape").exists()
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(BundleError):
        unpack_bundle(tmp_path / "junk.tar.gz", tmp_path / "dest")


def test_write_is_atomic_over_an_existing_bundle(tmp_path, keys):
    private, public = keys
    d = make_bundle(tmp_path / "b", private)
    with pytest.raises(BundleError):  # object arrays are refused before anything is written
        write_bundle(
            d, manifest={"labels": []}, arrays={"bad": np.array([{}], dtype=object)}, private_key=private
        )
    verify_bundle(d, public)
    make_bundle(d, private)  # replacing works
    verify_bundle(d, public)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "keys"]  # no temp dirs left


@pytest.mark.parametrize(("kernel", "n_people"), [("linear", 6), ("rbf", 6), ("linear", 2), ("rbf", 2)])
def test_numpy_svm_equals_sklearn(tmp_path, keys, kernel, n_people):
    from sklearn.svm import SVC

    private, public = keys
    X, y = clustered(n_people, 12, spread=0.9, seed=3)  # overlapping: real decisions to make
    clf = SVC(kernel=kernel, C=1.0, gamma=0.5, class_weight="balanced").fit(X, y)
    b = load_bundle(make_bundle(tmp_path / "b", private, "svm", clf, X, y), public)
    Xt, _ = clustered(n_people, 40, spread=1.2, seed=4)
    assert (clf.predict(Xt) != np.repeat(np.arange(n_people), 40)).any()  # not trivial
    np.testing.assert_array_equal(b.predict_candidates(Xt), clf.predict(Xt))
    assert [d.candidate for d in b.classify(Xt)] == [f"p{i}" for i in clf.predict(Xt)]


def test_import_does_not_pull_server_packages():
    code = (
        "import sys, facefleet.registry.format, facefleet.registry.inference, facefleet.registry.keys;"
        "bad=[m for m in ('sklearn','mlflow','pandas') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_margin_rule_decides_like_training(tmp_path, keys):
    """The device's decision is the score training calibrated its thresholds on."""
    from facefleet.train.thresholds import OpenSetParams, margin_scores

    private, public = keys
    X, y = clustered(4, 5, seed=3)
    rule = {"rule": "centroid_margin", "margin": 0.5, "far_distance": 1.0, "max_distance": 0.6}
    b = load_bundle(make_bundle(tmp_path / "m", private, X=X, y=y, open_set=rule), public)
    rng = np.random.default_rng(0)
    probes = np.vstack([X + 0.05 * rng.normal(size=X.shape), rng.normal(size=(20, X.shape[1]))])
    C = np.stack([X[y == c].mean(0) for c in range(4)]).astype(np.float64)
    expect = margin_scores(
        np.sqrt(((probes[:, None, :] - C[None]) ** 2).sum(-1)),
        OpenSetParams(margin=0.5, far_distance=1.0, max_threshold=0.6),
    )
    got = b.classify(probes)
    assert [d.distance for d in got] == pytest.approx(expect.score.tolist(), abs=1e-6)
    named = (expect.score <= 0.5) & (expect.distance <= 0.6)
    assert [d.name is not None for d in got] == named.tolist()
    assert 0 < named.sum() < len(probes)
    for bad, message in (
        ({**rule, "rule": "magic"}, "unknown open-set rule"),
        ({"rule": "centroid_margin", "margin": 0.5}, "open_set.far_distance"),
    ):
        with pytest.raises(BundleError, match=message):
            load_bundle(make_bundle(tmp_path / "bad", private, open_set=bad), public)


def test_load_bundle_accepts_the_public_key_path(tmp_path):
    """Issue 15 item 14: ``load_bundle(path, "key.pem")`` (a path or a key, as the docs say)."""
    priv, pub = generate_keypair(tmp_path / "keys")
    bundle = make_bundle(tmp_path / "b", load_private_key(priv))
    for key in (pub, str(pub), pub.read_bytes(), load_public_key(pub)):
        assert load_bundle(bundle, key).manifest["version"] == 7
        assert verify_bundle(bundle, key)["name"] == "gamma4"
    with pytest.raises(BundleError, match="no public key at"):
        load_bundle(bundle, str(tmp_path / "missing.pem"))


def test_key_pair_made_once_when_processes_race(tmp_path):
    """Two first trainings at once: one pair is made, and both sign with it."""
    import multiprocessing as mp

    from facefleet.registry.keys import ensure_keypair, public_key_path

    ctx = mp.get_context("spawn")
    with ctx.Pool(4) as pool:
        made = pool.map(ensure_keypair, [tmp_path / "keys"] * 8)
    assert sum(made) == 1
    pem = public_key_path(tmp_path / "keys").read_bytes()
    assert not ensure_keypair(tmp_path / "keys") and public_key_path(tmp_path / "keys").read_bytes() == pem

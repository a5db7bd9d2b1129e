"""Training on real face embeddings: the model, the MLflow run, the bundle, evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facefleet.errors import BundleError, ModelError
from facefleet.registry.catalog import bundle_path
from facefleet.registry.format import verify_bundle, write_bundle
from facefleet.registry.inference import load_bundle
from facefleet.registry.keys import generate_keypair, load_private_key, load_public_key
from facefleet.train.classifier import SearchSpace
from facefleet.train.config import load_config
from facefleet.train.evaluate import evaluate_bundle, log_evaluation
from facefleet.train.model import build_model
from facefleet.train.pipeline import train_arrays
from facefleet.train.thresholds import OpenSetParams

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "gamma4.yaml"
EMBEDDER = "dlib-resnet-v1:test"


def _bundle(tmp_path: Path, trained, method=None):
    priv, pub = generate_keypair(tmp_path / "keys")
    manifest = {
        "format": 1,
        "model": "m",
        "version": 1,
        "name": "t",
        "embedder_id": EMBEDDER,
        "labels": trained.labels,
        "thresholds": trained.thresholds,
        "method": method or trained.fitted.method,
        "metrics": {},
        "created": "x",
    }
    d = write_bundle(
        tmp_path / "b", manifest=manifest, arrays=trained.arrays, private_key=load_private_key(priv)
    )
    return load_bundle(d, load_public_key(pub), expected_embedder_id=EMBEDDER)


@pytest.fixture(scope="module")
def trained(real_data):
    return build_model(real_data.train.X, real_data.train.names, SearchSpace(), OpenSetParams())


def test_open_set_on_real_faces(tmp_path, real_data, trained):
    assert trained.fitted.method in ("svm", "centroid")
    assert trained.metrics["cv_accuracy"] >= 0.97
    bundle = _bundle(tmp_path, trained)
    res = evaluate_bundle(bundle, real_data.test.X, real_data.test.names, real_data.strangers.X)
    m = res.metrics
    assert m["known_faces"] == len(real_data.test) and m["unknown_faces"] == len(real_data.strangers)
    assert m["closed_set_accuracy"] >= 0.97
    assert m["unknown_false_accept_rate"] <= 0.01  # strangers stay out
    assert m["known_misidentification_rate"] <= 0.01
    assert m["known_false_reject_rate"] <= 0.10  # ... while enrolled people are named
    # the classic global 0.6 lets more strangers in than the fitted thresholds do
    d = bundle.classify(real_data.strangers.X)
    assert sum(x.distance <= 0.6 for x in d) >= sum(x.name is not None for x in d)
    row = {r.name: r for r in res.people}["madonna"]
    assert row.faces >= 4 and row.named + row.rejected + row.wrong == row.faces


def test_bundle_predictions_equal_sklearn(tmp_path, real_data):
    svm = build_model(real_data.train.X, real_data.train.names, SearchSpace(method="svm"), OpenSetParams())
    assert svm.fitted.method == "svm"
    bundle = _bundle(tmp_path, svm)
    X = np.vstack([real_data.test.X, real_data.strangers.X, real_data.train.X])
    np.testing.assert_array_equal(
        bundle.predict_candidates(X), svm.fitted.estimator.predict(X.astype(np.float64))
    )
    # an RBF winner exports just as exactly
    rbf = build_model(
        real_data.celeb_train.X,
        real_data.celeb_train.names,
        SearchSpace(kernels=("rbf",), gamma=(0.5,), method="svm"),
        OpenSetParams(),
    )
    assert rbf.fitted.params["kernel"] == "rbf"
    b2 = _bundle(tmp_path / "rbf", rbf)
    np.testing.assert_array_equal(b2.predict_candidates(X), rbf.fitted.estimator.predict(X))


def test_one_photo_per_person_uses_the_gallery(tmp_path, real_data):
    knn = real_data.knn_train
    assert min(knn.names.count(n) for n in set(knn.names)) == 1
    model = build_model(knn.X, knn.names, SearchSpace(), OpenSetParams())
    assert model.fitted.method == "nearest"
    assert "single photo" in model.fitted.reason
    bundle = _bundle(tmp_path, model)
    assert [d.name for d in bundle.classify(knn.X)] == knn.names
    # the five celebrities are strangers to this model
    decisions = bundle.classify(real_data.celeb_val.X)
    assert sum(d.name is not None for d in decisions) <= 0.01 * len(decisions) + 1


@pytest.fixture(scope="module")
def trained_ws(tmp_path_factory, real_data):
    from facefleet.workspace import Workspace

    ws = Workspace.init(tmp_path_factory.mktemp("trainws"))
    cfg = load_config(EXAMPLE)
    res = train_arrays(
        ws,
        real_data.train.X,
        real_data.train.names,
        embedder_id=EMBEDDER,
        config=cfg,
        strangers=real_data.strangers.X[:3],
    )
    return ws, res


def test_training_run_lands_in_mlflow(trained_ws):
    from mlflow.tracking import MlflowClient

    ws, res = trained_ws
    client = MlflowClient(tracking_uri=ws.tracking_uri, registry_uri=ws.tracking_uri)
    run = client.get_run(res.run_id)
    assert run.data.params["C"].startswith("0.001,") and run.data.params["chosen_method"] == res.method
    assert run.data.metrics["cv_accuracy"] == pytest.approx(res.metrics["cv_accuracy"])
    assert "far" in run.data.metrics and "frr" in run.data.metrics
    assert run.data.metrics["stranger_far"] == 0.0
    assert run.data.tags["model_version"] == str(res.version) == "1"

    def files(path=None):
        out = []
        for f in client.list_artifacts(res.run_id, path):
            out += files(f.path) if f.is_dir else [f.path]
        return out

    arts = set(files())
    assert {
        "config/version.yaml",
        "classification_report.txt",
        "plots/far_frr_train.png",
        "plots/distances_train.png",
        "bundle/manifest.json",
        "bundle/model.npz",
        "bundle/manifest.sig",
        "packed/face_model-1.tar.gz",
    } <= arts
    local = Path(client.download_artifacts(res.run_id, "plots/far_frr_train.png"))
    assert local.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(ws.artifacts_dir) in run.info.artifact_uri  # never ./mlruns
    report = Path(client.download_artifacts(res.run_id, "classification_report.txt")).read_text()
    assert "madonna" in report and "accuracy" in report
    mv = client.get_model_version_by_alias("face_model", "experimental")
    assert int(mv.version) == res.version and mv.tags["name"] == "gamma4"
    assert mv.source.endswith("/bundle") and mv.run_id == res.run_id


def test_published_bundle_verifies_and_is_found(trained_ws, real_data):
    ws, res = trained_ws
    public = load_public_key(ws.keys_dir / "signing_key.pub.pem")
    manifest = verify_bundle(res.bundle_dir, public)
    assert manifest["version"] == 1 and manifest["name"] == "gamma4"
    assert manifest["model"] == "face_model" and manifest["embedder_id"] == EMBEDDER
    assert set(manifest["thresholds"]) == set(real_data.train.names)
    assert manifest["method"] == res.method
    assert verify_bundle(ws.models_dir / "face_model.tar.gz", public) == manifest
    with pytest.raises(BundleError, match="made for embedder"):
        load_bundle(res.bundle_dir, public, expected_embedder_id="dlib-resnet-v1:other")
    for ref in (None, 1, "1", "v1", "@experimental", "gamma4"):
        assert bundle_path(ws, ref) == res.bundle_dir
    with pytest.raises(ModelError, match="no version"):
        bundle_path(ws, 9)
    with pytest.raises(ModelError, match="named"):
        bundle_path(ws, "nobody")


def test_evaluation_is_logged(trained_ws, real_data):
    from mlflow.tracking import MlflowClient

    ws, res = trained_ws
    bundle = load_bundle(bundle_path(ws), load_public_key(ws.keys_dir / "signing_key.pub.pem"))
    result = evaluate_bundle(bundle, real_data.test.X, real_data.test.names, real_data.strangers.X[3:])
    run_id = log_evaluation(ws, result)
    client = MlflowClient(tracking_uri=ws.tracking_uri)
    run = client.get_run(run_id)
    for key in (
        "closed_set_accuracy",
        "known_false_reject_rate",
        "unknown_false_accept_rate",
        "open_set_accuracy",
    ):
        assert run.data.metrics[key] == pytest.approx(result.metrics[key])
    assert run.data.tags["model_version"] == "1"
    names = {f.path for f in client.list_artifacts(run_id, "plots")}
    assert names == {"plots/confusion_matrix.png", "plots/far_frr.png"}
    png = Path(client.download_artifacts(run_id, "plots/confusion_matrix.png")).read_bytes()
    assert png[:4] == b"\x89PNG"
    cm = np.array(result.confusion)
    assert cm.sum() == len(real_data.test) + len(real_data.strangers) - 3


def test_second_version_and_refetch_from_mlflow(trained_ws, real_data):
    import shutil

    ws, first = trained_ws
    cfg = load_config(EXAMPLE, name="delta1", method="centroid")
    res = train_arrays(
        ws, real_data.celeb_train.X, real_data.celeb_train.names, embedder_id=EMBEDDER, config=cfg
    )
    assert res.version == 2 and res.method == "centroid"
    assert bundle_path(ws) == res.bundle_dir
    assert bundle_path(ws, "@experimental") == res.bundle_dir
    assert bundle_path(ws, "gamma4") == first.bundle_dir
    shutil.rmtree(first.bundle_dir)  # a server that never held version 1 locally
    got = bundle_path(ws, 1)
    assert got == first.bundle_dir
    verify_bundle(got, load_public_key(ws.keys_dir / "signing_key.pub.pem"))

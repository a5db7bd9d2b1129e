"""identify uses the newest trained model once there is one, and the gallery before."""

from __future__ import annotations

from facefleet.identify import BundleMatcher, GalleryMatcher, default_matcher, identify
from facefleet.train.pipeline import train


def test_identify_switches_from_gallery_to_the_trained_model(knn_workspace, copy_workspace, faces_dir):
    ws = copy_workspace(knn_workspace)
    embedder_id = ws.engine().embedder.id
    assert isinstance(default_matcher(ws, embedder_id), GalleryMatcher)
    assert not (ws.root / "mlflow.db").exists()  # looking for a model created nothing
    trained = train(ws)
    matcher = default_matcher(ws, embedder_id)
    assert isinstance(matcher, BundleMatcher) and matcher.bundle.version == trained.version
    (result,) = identify(ws, [faces_dir / "examples" / "knn_examples" / "test" / "obama_and_biden.jpg"])
    names = [f["name"] for f in result["faces"]]
    assert sorted(n for n in names if n) == ["biden", "obama"] and names.count(None) == 1
    strangers = identify(ws, [faces_dir / "five_celebrity" / "val"])
    assert [f["name"] for r in strangers for f in r["faces"] if f["name"]] == []
    assert isinstance(default_matcher(ws, embedder_id, threshold=0.5), GalleryMatcher)

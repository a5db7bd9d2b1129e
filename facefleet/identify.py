"""Identification: every face in every image gets a box, a best match, a distance and a
known/unknown decision, from the trained model bundle when one exists, else from the enrolled
gallery (nearest embedding under a distance threshold).
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from facefleet.errors import FacefleetError
from facefleet.registry.inference import Bundle, Decision, Matcher, load_bundle, pairwise_distances
from facefleet.vision.batch import analyse_files
from facefleet.vision.image import iter_image_files
from facefleet.workspace import Workspace

log = logging.getLogger(__name__)


class GalleryMatcher:
    """Nearest enrolled embedding; a match only under ``threshold`` (dlib's 0.6 by default)."""

    def __init__(self, X: np.ndarray, names: list[str], threshold: float = 0.6) -> None:
        self.X = np.asarray(X, dtype=np.float32)
        self.names = list(names)
        self.threshold = float(threshold)
        self.description = f"gallery ({len(self.names)} faces, threshold {self.threshold:g})"

    def classify(self, X: np.ndarray) -> list[Decision]:
        """Nearest face per row; ``score`` is 1 - distance (no calibrated probability here)."""
        if len(X) == 0:
            return []
        if len(self.names) == 0:
            return [Decision(None, float("inf"), 0.0, None) for _ in range(len(X))]
        dist = pairwise_distances(X, self.X)
        best = dist.argmin(axis=1)
        out = []
        for row, idx in enumerate(best):
            d = float(dist[row, idx])
            cand = self.names[idx]
            out.append(Decision(cand if d <= self.threshold else None, d, max(0.0, 1.0 - d), cand))
        return out


class BundleMatcher:
    """A trained, signed model bundle: the classifier ranks, per-person thresholds decide."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.description = bundle.description

    def classify(self, X: np.ndarray) -> list[Decision]:
        if len(X) == 0:
            return []
        return self.bundle.classify(np.asarray(X, dtype=np.float32))


def gallery_matcher(ws: Workspace, embedder_id: str, threshold: float | None = None) -> GalleryMatcher:
    store = ws.open_store()
    try:
        data = store.training_set(embedder_id)
    finally:
        store.close()
    if threshold is None:
        threshold = ws.settings.identify.distance_threshold
    return GalleryMatcher(data.X, data.names, threshold)


def default_matcher(
    ws: Workspace, embedder_id: str, *, model: str | None = None, threshold: float | None = None
) -> Matcher:
    """The current trained model when there is one (or ``model`` if given), else the gallery."""
    if threshold is not None and model is None:
        return gallery_matcher(ws, embedder_id, threshold)
    try:
        from facefleet.registry.catalog import bundle_path
        from facefleet.registry.keys import load_public_key
    except ImportError:
        if model:
            raise FacefleetError(
                "trained models need the server extras: pip install 'facefleet[server]'"
            ) from None
        return gallery_matcher(ws, embedder_id, threshold)
    try:
        path = bundle_path(ws, model)
    except FacefleetError:
        if model:
            raise
        path = None
    if path is None:
        return gallery_matcher(ws, embedder_id, threshold)
    return BundleMatcher(
        load_bundle(path, load_public_key(ws.public_key_path), expected_embedder_id=embedder_id)
    )


def identify(
    ws: Workspace,
    paths: list[Path | str],
    *,
    model: str | None = None,
    threshold: float | None = None,
    workers: int | None = None,
) -> list[dict[str, Any]]:
    """One result per input image, in the shape of ``facefleet identify --json``."""
    files = list(iter_image_files(paths))
    if not files:
        raise FacefleetError("no images to identify in " + ", ".join(str(p) for p in paths))
    engine = ws.engine()
    embedder_id = engine.embedder.id
    matcher = default_matcher(ws, embedder_id, model=model, threshold=threshold)
    log.info("identifying with %s", matcher.description)
    results = []
    for analysis in analyse_files(files, ws.vision_config(), workers=workers, engine=engine, desc="identify"):
        faces = []
        vectors = [f.embedding for f in analysis.faces if f.embedding is not None]
        matches = matcher.classify(np.stack(vectors)) if vectors else []
        for face, match in zip(analysis.faces, matches):
            faces.append(
                {
                    "box": list(face.box),
                    "name": match.name,
                    "distance": round(match.distance, 4),
                    "candidate": match.candidate,
                    "quality": face.quality,
                }
            )
        results.append({"path": analysis.path, "faces": faces, "error": analysis.error})
    return results


def results_to_csv(results: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["path", "face", "left", "top", "right", "bottom", "name", "distance", "error"])
    for res in results:
        if not res["faces"]:
            writer.writerow([res["path"], "", "", "", "", "", "", "", res["error"] or "no face"])
        for i, face in enumerate(res["faces"]):
            writer.writerow([res["path"], i, *face["box"], face["name"] or "unknown", face["distance"], ""])
    return out.getvalue()

"""Inference with a model bundle: classification maths and the one matcher protocol.

``model.npz`` holds: gallery (M x D float32), gallery_labels (M int32, index into labels),
centroids (K x D float32), temperature (scalar), svm_* (method "svm"): support_vectors,
dual_coef, intercept, n_support, classes (label indices), gamma (0 = linear kernel).

Classification: the classifier ranks (SVM one-vs-one vote, nearest centroid or nearest
gallery face), then a distance check decides: the Euclidean distance to the candidate's
nearest gallery face must be within that person's threshold, else the face is unknown.

Owns :class:`Matcher` (what identify, evaluate and the edge pipeline need of a model),
:class:`Bundle` and :func:`load_bundle`, and the maths (:func:`pairwise_distances` and the
SVM/softmax helpers the trainer shares). This module is what devices run: numpy and
cryptography only (never sklearn, mlflow or pandas).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from facefleet.errors import BundleError, FacefleetError
from facefleet.registry.format import MODEL_FILE, load_arrays, unpack_bundle, verify, verify_bundle

METHODS = ("svm", "centroid", "nearest")
_CHUNK = 1024  # rows per block when classifying: bounds the distance matrix in memory


@dataclass(frozen=True)
class Decision:
    """One face's outcome: ``name`` is None for an unknown face; ``candidate`` is the ranked
    best label either way, ``distance`` the distance to its nearest gallery face, and
    ``score`` the calibrated probability of the candidate among the enrolled people."""

    name: str | None
    distance: float
    score: float
    candidate: str | None


class Matcher(Protocol):
    """Names embeddings: a trained :class:`Bundle` or the enrolled gallery (identify)."""

    @property
    def description(self) -> str: ...

    def classify(self, X: np.ndarray) -> list[Decision]: ...


def svm_ovo_votes(
    K: np.ndarray,
    dual_coef: np.ndarray,
    intercept: np.ndarray,
    n_support: np.ndarray,
) -> np.ndarray:
    """One-vs-one votes as libsvm counts them: ``K`` is the n x S kernel between the samples
    and the support vectors (grouped by class); returns n x C vote counts."""
    n, n_cls = K.shape[0], len(n_support)
    starts = np.concatenate([[0], np.cumsum(n_support)])
    votes = np.zeros((n, n_cls), dtype=np.int64)
    p = 0
    for i in range(n_cls):
        si = slice(starts[i], starts[i + 1])
        for j in range(i + 1, n_cls):
            sj = slice(starts[j], starts[j + 1])
            dec = K[:, si] @ dual_coef[j - 1, si] + K[:, sj] @ dual_coef[i, sj] + intercept[p]
            win_i = dec > 0
            votes[:, i] += win_i
            votes[:, j] += ~win_i
            p += 1
    return votes


def svm_kernel(X: np.ndarray, sv: np.ndarray, gamma: float) -> np.ndarray:
    """Linear kernel (``gamma`` 0) or RBF ``exp(-gamma |x - sv|^2)``, in float64."""
    X = np.asarray(X, dtype=np.float64)
    sv = np.asarray(sv, dtype=np.float64)
    dot = X @ sv.T
    if gamma <= 0:
        return dot
    sq = (X * X).sum(1)[:, None] + (sv * sv).sum(1)[None, :] - 2.0 * dot
    return np.exp(-gamma * np.maximum(sq, 0.0))


def pairwise_distances(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Euclidean distances, n x m, float64."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    sq = (X * X).sum(1)[:, None] + (Y * Y).sum(1)[None, :] - 2.0 * (X @ Y.T)
    return np.sqrt(np.maximum(sq, 0.0))


def class_min_distances(D: np.ndarray, labels_sorted: np.ndarray, n_classes: int) -> np.ndarray:
    """Per class, the smallest distance to that class's gallery faces (columns of ``D`` sorted
    by label, every class present); n x n_classes."""
    starts = np.searchsorted(labels_sorted, np.arange(n_classes))
    return np.minimum.reduceat(D, starts, axis=1)


def softmax_scores(dist: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities over classes from distances: ``softmax(-d / T)`` per row."""
    z = -np.asarray(dist, dtype=np.float64) / max(float(temperature), 1e-6)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Bundle:
    """A verified bundle loaded in memory."""

    def __init__(self, manifest: dict[str, Any], arrays: dict[str, np.ndarray], path: Path):
        self.manifest = manifest
        self.path = path
        self.labels: list[str] = list(manifest.get("labels") or [])
        self.thresholds: dict[str, float] = {
            k: float(v) for k, v in (manifest.get("thresholds") or {}).items()
        }
        self.version = manifest.get("version")
        self.name = manifest.get("name")
        self.model = manifest.get("model")
        self.embedder_id = manifest.get("embedder_id")
        self.method = manifest.get("method")
        self._check(arrays)
        order = np.argsort(arrays["gallery_labels"], kind="stable")
        self._gallery = np.asarray(arrays["gallery"], dtype=np.float64)[order]
        self._gallery_labels = np.asarray(arrays["gallery_labels"])[order]
        self._centroids = np.asarray(arrays["centroids"], dtype=np.float64)
        self._thr = np.array([self.thresholds[label] for label in self.labels], dtype=np.float64)
        self._temperature = float(arrays["temperature"])
        self._svm = None
        if self.method == "svm":
            self._svm = {
                k: np.asarray(arrays[f"svm_{k}"])
                for k in ("support_vectors", "dual_coef", "intercept", "n_support", "classes")
            }
            self._svm["gamma"] = float(arrays["svm_gamma"])

    def _check(self, arrays: dict[str, np.ndarray]) -> None:
        where = str(self.path)
        if self.method not in METHODS:
            raise BundleError(f"{where}: unknown classifier method {self.method!r}")
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise BundleError(f"{where}: labels missing or duplicated")
        if set(self.thresholds) != set(self.labels):
            raise BundleError(f"{where}: thresholds do not match the labels")
        need = ["gallery", "gallery_labels", "centroids", "temperature"]
        if self.method == "svm":
            need += [f"svm_{k}" for k in ("support_vectors", "dual_coef", "intercept")]
            need += ["svm_n_support", "svm_classes", "svm_gamma"]
        missing = [k for k in need if k not in arrays]
        if missing:
            raise BundleError(f"{where}: model arrays missing: {', '.join(missing)}")
        g, gl = arrays["gallery"], arrays["gallery_labels"]
        n = len(self.labels)
        if (
            g.ndim != 2
            or gl.shape != (len(g),)
            or arrays["centroids"].shape != (n, g.shape[1])
            or set(np.unique(gl).tolist()) != set(range(n))
        ):
            raise BundleError(f"{where}: gallery arrays are inconsistent with the labels")

    @property
    def description(self) -> str:
        return f"model {self.name or self.model} v{self.version}"

    @property
    def dim(self) -> int:
        return int(self._gallery.shape[1])

    def _rank(self, X: np.ndarray, dmin: np.ndarray) -> np.ndarray:
        """Candidate label index per row."""
        if self.method == "nearest":
            return np.argmin(dmin, axis=1)
        if self.method == "centroid":
            return np.argmin(pairwise_distances(X, self._centroids), axis=1)
        s = self._svm
        K = svm_kernel(X, s["support_vectors"], s["gamma"])
        votes = svm_ovo_votes(K, s["dual_coef"], s["intercept"], s["n_support"])
        return s["classes"][np.argmax(votes, axis=1)]

    def predict_candidates(self, X: np.ndarray) -> np.ndarray:
        """The ranked best label index per row (before the distance check)."""
        X = self._as_matrix(X)
        out = np.empty(len(X), dtype=np.int64)
        for a in range(0, len(X), _CHUNK):
            xb = X[a : a + _CHUNK]
            D = pairwise_distances(xb, self._gallery)
            dmin = class_min_distances(D, self._gallery_labels, len(self.labels))
            out[a : a + _CHUNK] = self._rank(xb, dmin)
        return out

    def _as_matrix(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[None]
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise BundleError(f"expected N x {self.dim} embeddings, got shape {X.shape}")
        return X

    def classify(self, X: np.ndarray) -> list[Decision]:
        """Name (or None for unknown), distance, score and candidate for each embedding."""
        X = self._as_matrix(X)
        out: list[Decision] = []
        for a in range(0, len(X), _CHUNK):
            xb = X[a : a + _CHUNK]
            D = pairwise_distances(xb, self._gallery)
            dmin = class_min_distances(D, self._gallery_labels, len(self.labels))
            cand = self._rank(xb, dmin)
            rows = np.arange(len(xb))
            dist = dmin[rows, cand]
            score = softmax_scores(dmin, self._temperature)[rows, cand]
            accept = dist <= self._thr[cand]
            for c, d, s, ok in zip(cand, dist, score, accept, strict=True):
                label = self.labels[int(c)]
                out.append(Decision(label if ok else None, float(d), float(s), label))
        return out


def load_bundle(path: Path, public_key: Any, expected_embedder_id: str | None = None) -> Bundle:
    """Verify a bundle (directory or ``.tar.gz``) and load it; refuses a bundle made for
    another embedder when ``expected_embedder_id`` is given. ``public_key`` is a loaded
    Ed25519 key or the path of its PEM file."""
    path = Path(path)
    if isinstance(public_key, (str, Path)):
        from facefleet.registry.keys import load_public_key

        public_key = load_public_key(Path(public_key))
    if not path.exists():
        raise BundleError(f"{path}: no such bundle")
    if path.is_dir():
        manifest = verify_bundle(path, public_key)
        arrays = load_arrays(path / MODEL_FILE)
    else:
        with tempfile.TemporaryDirectory(prefix="facefleet-bundle-") as tmp:
            d = unpack_bundle(path, Path(tmp) / "bundle")
            manifest = verify_bundle(d, public_key)
            arrays = load_arrays(d / MODEL_FILE)
    if expected_embedder_id is not None and manifest.get("embedder_id") != expected_embedder_id:
        raise BundleError(
            f"{path}: made for embedder {manifest.get('embedder_id')!r}, "
            f"but this device embeds with {expected_embedder_id!r}; retrain or deploy a "
            "bundle built for this embedder"
        )
    return Bundle(manifest, arrays, path)


def verify_complete(
    bundle_dir: Path, public_key: Any | None, *, check_embedder: bool = True
) -> dict[str, Any]:
    """Everything ``recognize`` will check, for an unpacked bundle, before anything is switched
    or shipped: signature (when a key is given) and every sha256 (:func:`verify`), plain
    arrays (no pickle) that make a usable classifier, and an embedder this installation has
    (skipped with ``check_embedder`` False, or where the face models are not installed).
    Every load path (device install, ``edge sync``, push deploy, ``package``) calls it."""
    bundle_dir = Path(bundle_dir)
    manifest = verify(bundle_dir, public_key)
    Bundle(manifest, load_arrays(bundle_dir / MODEL_FILE), bundle_dir)
    if check_embedder:
        try:
            from facefleet.vision.embed import unsupported_embedder

            reason = unsupported_embedder(manifest.get("embedder_id"))
        except (ImportError, OSError, FacefleetError):  # no face models here: cannot tell
            reason = None
        if reason:
            raise BundleError(f"{bundle_dir}: {reason}; retrain or deploy a bundle built for it")
    return manifest

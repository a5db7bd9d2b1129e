"""The signed model bundle (format 1): write, pack, unpack, verify, load, classify.

A bundle is a directory (or the same files in a ``.tar.gz``)::

    manifest.json   sorted-key JSON: format, model, version, name, embedder_id, labels,
                    thresholds, method, metrics, created, files {name: sha256}
    manifest.sig    raw 64-byte Ed25519 signature over manifest.json's exact bytes
    model.npz       plain arrays (no pickle), evaluated with numpy:
                      gallery (M x D float32), gallery_labels (M int32, index into labels),
                      centroids (K x D float32), temperature (scalar),
                      svm_* (method "svm"): support_vectors, dual_coef, intercept,
                      n_support, classes (label indices), gamma (0 = linear kernel)

Classification: the classifier ranks (SVM one-vs-one vote, nearest centroid or nearest
gallery face), then a distance check decides: the Euclidean distance to the candidate's
nearest gallery face must be within that person's threshold, else the face is unknown.

This module is what devices run: it imports numpy and cryptography only (never sklearn,
mlflow or pandas), and never loads a pickle.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facefleet.errors import BundleError
from facefleet.fileio import sha256_bytes as _sha256_bytes
from facefleet.fileio import sha256_file as _sha256_file

FORMAT = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MODEL_FILE = "model.npz"
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
    candidate: str


# -- files -------------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if (
        not name
        or name in (MANIFEST, SIGNATURE, ".", "..")
        or "/" in name
        or "\\" in name
        or name.startswith(".")
    ):
        raise BundleError(f"bad bundle file name {name!r}")


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The canonical bytes of a manifest: sorted keys, UTF-8, trailing newline."""
    return (json.dumps(manifest, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise BundleError(f"array {key!r} has dtype object: bundles hold plain arrays only")
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap_in(tmp_dir: Path, out_dir: Path) -> None:
    """Rename ``tmp_dir`` to ``out_dir``, replacing an existing directory of that name."""
    old = None
    if out_dir.exists() or out_dir.is_symlink():
        old = out_dir.with_name(f".{out_dir.name}.old{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(tmp_dir, out_dir)
    _fsync_dir(out_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


def write_bundle(
    out_dir: Path,
    *,
    manifest: dict[str, Any],
    arrays: dict[str, np.ndarray],
    private_key,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write and sign a bundle directory atomically (built beside ``out_dir``, then renamed)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    files = {MODEL_FILE: _npz_bytes(arrays)}
    for name, data in (extra_files or {}).items():
        _check_name(name)
        if name == MODEL_FILE:
            raise BundleError(f"extra file {name!r} would replace the model arrays")
        files[name] = bytes(data)
    manifest = dict(manifest)
    manifest.setdefault("format", FORMAT)
    manifest["files"] = {name: _sha256_bytes(data) for name, data in sorted(files.items())}
    mbytes = manifest_bytes(manifest)
    signature = private_key.sign(mbytes)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for name, data in [*files.items(), (MANIFEST, mbytes), (SIGNATURE, signature)]:
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o755)
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def pack_bundle(bundle_dir: Path, out_path: Path) -> Path:
    """The bundle's files (flat, no folder) as a ``.tar.gz``, written atomically."""
    bundle_dir, out_path = Path(bundle_dir), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for f in sorted(bundle_dir.iterdir()):
                if not f.is_file() or f.is_symlink():
                    raise BundleError(f"{f}: bundles hold regular files only")
                info = tar.gettarinfo(str(f), arcname=f.name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with open(f, "rb") as fh:
                    tar.addfile(info, fh)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out_path


def unpack_bundle(tar_path: Path, dest_dir: Path) -> Path:
    """Extract a packed bundle into ``dest_dir`` (atomically); refuses anything but flat
    regular files: absolute paths, '..', folders, links and devices are errors."""
    tar_path, dest_dir = Path(tar_path), Path(dest_dir)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", dir=dest_dir.parent))
    try:
        try:
            tar = tarfile.open(tar_path, "r:*")  # noqa: SIM115 - closed by the with below
        except (OSError, tarfile.TarError) as exc:
            raise BundleError(f"{tar_path}: not a readable bundle archive ({exc})") from None
        with tar:
            try:
                members = tar.getmembers()
            except (OSError, tarfile.TarError, EOFError) as exc:
                raise BundleError(f"{tar_path}: corrupt bundle archive ({exc})") from None
            seen: set[str] = set()
            for m in members:
                name = m.name
                if name.startswith("./"):
                    name = name[2:]
                if name.startswith("/") or ".." in name.split("/") or "/" in name:
                    raise BundleError(f"{tar_path}: refusing entry {m.name!r} (path outside)")
                if not m.isfile():
                    raise BundleError(f"{tar_path}: refusing entry {m.name!r} (not a file)")
                if name in seen:
                    raise BundleError(f"{tar_path}: duplicate entry {m.name!r}")
                seen.add(name)
                src = tar.extractfile(m)
                if src is None:  # pragma: no cover - isfile() guarantees a stream
                    raise BundleError(f"{tar_path}: unreadable entry {m.name!r}")
                try:
                    with src, open(tmp / name, "wb") as out:
                        shutil.copyfileobj(src, out)
                except (OSError, tarfile.TarError, EOFError) as exc:
                    raise BundleError(f"{tar_path}: corrupt bundle archive ({exc})") from None
        os.chmod(tmp, 0o755)
        _swap_in(tmp, dest_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest_dir


def _is_archive(path: Path) -> bool:
    return path.is_file() and (path.name.endswith((".tar.gz", ".tgz")) or tarfile.is_tarfile(path))


def _verify_dir(bundle_dir: Path, public_key) -> dict[str, Any]:
    from cryptography.exceptions import InvalidSignature

    try:
        mbytes = (bundle_dir / MANIFEST).read_bytes()
        signature = (bundle_dir / SIGNATURE).read_bytes()
    except FileNotFoundError as exc:
        raise BundleError(f"{bundle_dir}: not a bundle ({Path(exc.filename).name} missing)") from None
    try:
        public_key.verify(signature, mbytes)
    except InvalidSignature:
        raise BundleError(
            f"{bundle_dir}: signature check failed (manifest or signature altered, "
            "or signed with another key)"
        ) from None
    try:
        manifest = json.loads(mbytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # signed but malformed
        raise BundleError(f"{bundle_dir}: manifest is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(
            f"{bundle_dir}: unsupported bundle format {manifest.get('format')!r} "
            f"(this facefleet reads format {FORMAT})"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or MODEL_FILE not in files:
        raise BundleError(f"{bundle_dir}: manifest lists no {MODEL_FILE}")
    for name, digest in files.items():
        _check_name(name)
        path = bundle_dir / name
        if not path.is_file() or path.is_symlink():
            raise BundleError(f"{bundle_dir}: {name} is missing")
        if _sha256_file(path) != digest:
            raise BundleError(f"{bundle_dir}: checksum mismatch for {name} (file altered)")
    extra = sorted({p.name for p in bundle_dir.iterdir()} - set(files) - {MANIFEST, SIGNATURE})
    if extra:
        raise BundleError(f"{bundle_dir}: files not listed in the manifest: {', '.join(extra)}")
    return manifest


def verify_bundle(path: Path, public_key) -> dict[str, Any]:
    """Check signature, then every file's sha256 and that no unlisted file is present.

    ``path`` is a bundle directory or a packed ``.tar.gz``; returns the manifest.
    """
    path = Path(path)
    if path.is_dir():
        return _verify_dir(path, public_key)
    if not path.exists():
        raise BundleError(f"{path}: no such bundle")
    with tempfile.TemporaryDirectory(prefix="facefleet-bundle-") as tmp:
        return _verify_dir(unpack_bundle(path, Path(tmp) / "bundle"), public_key)


# -- the model -----------------------------------------------------------------------------------
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


def load_bundle(path: Path, public_key, expected_embedder_id: str | None = None) -> Bundle:
    """Verify a bundle (directory or ``.tar.gz``) and load it; refuses a bundle made for
    another embedder when ``expected_embedder_id`` is given."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: no such bundle")
    if path.is_dir():
        manifest = _verify_dir(path, public_key)
        arrays = _load_arrays(path / MODEL_FILE)
    else:
        with tempfile.TemporaryDirectory(prefix="facefleet-bundle-") as tmp:
            d = unpack_bundle(path, Path(tmp) / "bundle")
            manifest = _verify_dir(d, public_key)
            arrays = _load_arrays(d / MODEL_FILE)
    if expected_embedder_id is not None and manifest.get("embedder_id") != expected_embedder_id:
        raise BundleError(
            f"{path}: made for embedder {manifest.get('embedder_id')!r}, "
            f"but this device embeds with {expected_embedder_id!r}; retrain or deploy a "
            "bundle built for this embedder"
        )
    return Bundle(manifest, arrays, path)


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError) as exc:  # checksum matched, so this is a writer bug
        raise BundleError(f"{path}: model arrays unreadable ({exc})") from None

"""Session fixtures for the training tests: real dlib embeddings of the shared test photos.

Embeddings are computed once (HOG upsample 1, 5-point landmarks, aligned 150x150 chip,
dlib ResNet) and cached in pytest's cache folder keyed by each file's sha256, so reruns
only embed photos they have not seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from facefleet.fileio import sha256_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".bmp"}


@dataclass
class Faces:
    """One embedding per photo that shows a face (the largest face)."""

    X: np.ndarray  # N x 128 float32
    names: list[str]
    paths: list[Path]

    def subset(self, mask) -> Faces:
        idx = np.flatnonzero(mask)
        return Faces(self.X[idx], [self.names[i] for i in idx], [self.paths[i] for i in idx])

    def __len__(self) -> int:
        return len(self.names)


class _Embedder:
    def __init__(self) -> None:
        import dlib

        from facefleet.vision.models import model_path

        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(model_path("landmarks5")))
        self.net = dlib.face_recognition_model_v1(str(model_path("resnet")))

    def __call__(self, path: Path) -> np.ndarray | None:
        from PIL import Image

        with Image.open(path) as im:
            rgb = np.ascontiguousarray(np.asarray(im.convert("RGB")))
        dets = self.detector(rgb, 1)
        if len(dets) == 0:
            return None
        det = max(dets, key=lambda r: r.width() * r.height())
        chip = self.dlib.get_face_chip(rgb, self.shape(rgb, det), 150, 0.25)
        return np.asarray(self.net.compute_face_descriptor(chip), dtype=np.float32)


class EmbeddingCache:
    """sha256 -> vector (NaN row when no face was found), persisted as one .npz."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.vectors: dict[str, np.ndarray] = {}
        if path.is_file():
            with np.load(path) as data:
                for key, vec in zip(data["keys"], data["vectors"], strict=True):
                    self.vectors[str(key)] = vec
        self._embed: _Embedder | None = None
        self.dirty = False

    def get(self, path: Path) -> np.ndarray | None:
        key = sha256_file(path)
        if key not in self.vectors:
            if self._embed is None:
                self._embed = _Embedder()
            vec = self._embed(path)
            self.vectors[key] = np.full(128, np.nan, np.float32) if vec is None else vec
            self.dirty = True
        vec = self.vectors[key]
        return None if np.isnan(vec).any() else vec

    def save(self) -> None:
        if not self.dirty:
            return
        keys = sorted(self.vectors)
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(tmp, keys=np.array(keys), vectors=np.stack([self.vectors[k] for k in keys]))
        tmp.replace(self.path)
        self.dirty = False


def embed_folder(cache: EmbeddingCache, folder: Path, pick=None) -> Faces:
    """Folder per person (or a flat folder: name ""), one embedding per photo with a face."""
    X, names, paths = [], [], []
    people = sorted(p for p in folder.iterdir() if p.is_dir())
    groups = [(p.name, p) for p in people] if people else [("", folder)]
    for name, sub in groups:
        files = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if pick is not None:
            files = pick(files)
        for f in files:
            vec = cache.get(f)
            if vec is not None:
                X.append(vec)
                names.append(name)
                paths.append(f)
    cache.save()
    return Faces(np.array(X, np.float32).reshape(-1, 128), names, paths)


def _orl_index(path: Path) -> int:
    return int(path.stem)


@dataclass
class RealData:
    train: Faces  # five_celebrity/train + ORL photos 1-7 of each person
    test: Faces  # five_celebrity/val + ORL photos 8-10
    strangers: Faces  # faces/examples (single portraits of people enrolled nowhere)
    knn_train: Faces  # knn_examples/train: 1-2 photos per person
    celeb_train: Faces
    celeb_val: Faces


@pytest.fixture(scope="session")
def shared_faces(faces_dir: Path) -> Path:
    return faces_dir


@pytest.fixture(scope="session")
def real_data(request, shared_faces) -> RealData:
    cache = EmbeddingCache(request.config.cache.mkdir("facefleet-embeddings") / "dlib.npz")
    celeb_train = embed_folder(cache, shared_faces / "five_celebrity" / "train")
    celeb_val = embed_folder(cache, shared_faces / "five_celebrity" / "val")
    orl_train = embed_folder(cache, shared_faces / "orl", lambda fs: [f for f in fs if _orl_index(f) <= 7])
    orl_test = embed_folder(cache, shared_faces / "orl", lambda fs: [f for f in fs if _orl_index(f) > 7])
    examples = shared_faces / "examples"
    strangers = [
        f
        for f in sorted(examples.iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES and "partial" not in f.name
    ]
    sX, sp = [], []
    for f in strangers:
        vec = cache.get(f)
        if vec is not None:
            sX.append(vec)
            sp.append(f)
    cache.save()
    knn = embed_folder(cache, examples / "knn_examples" / "train")

    def cat(a: Faces, b: Faces) -> Faces:
        return Faces(np.vstack([a.X, b.X]), a.names + b.names, a.paths + b.paths)

    return RealData(
        train=cat(celeb_train, orl_train),
        test=cat(celeb_val, orl_test),
        strangers=Faces(np.array(sX, np.float32).reshape(-1, 128), [""] * len(sp), sp),
        knn_train=knn,
        celeb_train=celeb_train,
        celeb_val=celeb_val,
    )

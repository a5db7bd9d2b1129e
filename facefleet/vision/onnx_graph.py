"""What the two ONNX conversions share (dlib's ResNet in ``onnx_embedder``, BlazeFace in
``blazeface``): a small graph builder and the checks on their workspace cache (a cached
model must come from the same weights; a cached verification from the same model and
runtime)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class GraphBuilder:
    """Collects nodes and initializers; names everything uniquely."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, stem: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], stem: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = self.name(stem or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def load_cached(path: Path, source_sha256: str, what: str) -> bytes | None:
    """The cached ONNX bytes when present, readable and made from these weights; else None."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        import onnx

        props = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
    except Exception as exc:
        log.warning("cached %s %s is unreadable (%s); converting again", what, path, exc)
        return None
    if props.get("source_sha256") != source_sha256:
        log.warning("cached %s %s was made from other weights; converting again", what, path)
        return None
    return data


def cached_verification(path: Path, onnx_bytes: bytes, **expect: Any) -> dict | None:
    """A stored verification result when it is for these ONNX bytes, this onnxruntime and
    every ``expect`` field, and recorded no error; else None (verify again)."""
    import onnxruntime as ort

    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(result, dict)
        or result.get("onnx_sha256") != hashlib.sha256(onnx_bytes).hexdigest()
        or result.get("onnxruntime") != ort.__version__
        or any(result.get(k) != v for k, v in expect.items())
        or result.get("error")
    ):
        return None
    return result

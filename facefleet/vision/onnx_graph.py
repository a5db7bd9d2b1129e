"""What the two ONNX conversions share (dlib's ResNet in ``onnx_embedder``, BlazeFace in
``blazeface``): a small graph builder and the checks on their workspace cache (a cached
model must come from the same weights; a cached verification from the same model and
runtime), read without importing ``onnx`` (4 s of an engine's start on this machine)."""

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

    def model(
        self,
        name: str,
        inputs: list,
        outputs: list,
        *,
        opset: int,
        converter_version: int,
        source: str,
        source_sha256: str,
    ) -> Any:
        """The ONNX model of the graph, stamped with what it was converted from (the cache
        checks ``source_sha256`` and ``converter_version``)."""
        from onnx import helper

        model = helper.make_model(
            helper.make_graph(self.nodes, name, inputs, outputs, self.inits),
            producer_name="facefleet",
            producer_version=str(converter_version),
            opset_imports=[helper.make_opsetid("", opset)],
        )
        model.ir_version = 7  # readable by older onnxruntime builds on devices
        helper.set_model_props(
            model,
            {"source": source, "source_sha256": source_sha256, "converter_version": str(converter_version)},
        )
        return model


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(data: memoryview) -> list[tuple[int, int | memoryview]]:
    """The (field number, value) pairs of one protobuf message: varints as ints,
    length-delimited fields as views (no copy). ValueError on anything malformed."""
    out: list[tuple[int, int | memoryview]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((field, value))
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated field")
            out.append((field, data[pos : pos + size]))
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            if pos > len(data):
                raise ValueError("truncated field")
        else:
            raise ValueError(f"wire type {wire}")
    return out


MODEL_GRAPH, MODEL_METADATA = 7, 14  # ModelProto field numbers (onnx.proto)


def metadata_props(data: bytes) -> dict[str, str]:
    """``metadata_props`` of a serialised ONNX ModelProto, read straight off the protobuf
    wire format (the graph is skipped, not parsed). ValueError when ``data`` is not a model."""
    fields = _fields(memoryview(data))
    if not any(f == MODEL_GRAPH and isinstance(v, memoryview) for f, v in fields):
        raise ValueError("no graph")
    props: dict[str, str] = {}
    for field, value in fields:
        if field == MODEL_METADATA and isinstance(value, memoryview):
            entry = {f: bytes(v).decode() for f, v in _fields(value) if isinstance(v, memoryview)}
            props[entry.get(1, "")] = entry.get(2, "")
    return props


def load_cached(path: Path, source_sha256: str, what: str) -> bytes | None:
    """The cached ONNX bytes when present, readable and made from these weights; else None."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        props = metadata_props(data)
    except (ValueError, UnicodeDecodeError) as exc:
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

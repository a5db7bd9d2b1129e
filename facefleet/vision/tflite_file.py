"""A minimal reader of TensorFlow Lite model files (``.tflite``, a FlatBuffer), in pure Python.

Owns the decoding of the one subgraph of a float model: its tensors (shape, type, name,
constant data) and its operators (builtin code, inputs, outputs, options), enough for the
BlazeFace conversion in :mod:`facefleet.vision.blazeface`. No TensorFlow, no ``flatbuffers``
package: the few FlatBuffer rules used are in :class:`_Buf`. Field numbers follow TFLite's
``schema.fbs``; options are read for the operators listed in :data:`OPTION_FIELDS` only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facefleet.errors import ModelError

# builtin operator codes (schema.fbs, enum BuiltinOperator)
BUILTIN = {
    0: "ADD",
    2: "CONCATENATION",
    3: "CONV_2D",
    4: "DEPTHWISE_CONV_2D",
    6: "DEQUANTIZE",
    17: "MAX_POOL_2D",
    19: "RELU",
    21: "RELU6",
    22: "RESHAPE",
    23: "RESIZE_BILINEAR",
    34: "PAD",
}
# tensor element types (enum TensorType) we can read
DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
PADDING = {0: "SAME", 1: "VALID"}
ACTIVATION = {0: None, 1: "RELU", 3: "RELU6"}

# option name -> (field number, flatbuffer scalar format, default), per operator
OPTION_FIELDS: dict[str, dict[str, tuple[int, str, Any]]] = {
    "CONV_2D": {
        "padding": (0, "b", 0),
        "stride_w": (1, "i", 1),
        "stride_h": (2, "i", 1),
        "activation": (3, "b", 0),
        "dilation_w": (4, "i", 1),
        "dilation_h": (5, "i", 1),
    },
    "DEPTHWISE_CONV_2D": {
        "padding": (0, "b", 0),
        "stride_w": (1, "i", 1),
        "stride_h": (2, "i", 1),
        "depth_multiplier": (3, "i", 1),
        "activation": (4, "b", 0),
        "dilation_w": (5, "i", 1),
        "dilation_h": (6, "i", 1),
    },
    "MAX_POOL_2D": {
        "padding": (0, "b", 0),
        "stride_w": (1, "i", 1),
        "stride_h": (2, "i", 1),
        "filter_w": (3, "i", 1),
        "filter_h": (4, "i", 1),
        "activation": (5, "b", 0),
    },
    "ADD": {"activation": (0, "b", 0)},
    "CONCATENATION": {"axis": (0, "i", 0), "activation": (1, "b", 0)},
    "RESIZE_BILINEAR": {"align_corners": (2, "?", False), "half_pixel_centers": (3, "?", False)},
}


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: Any
    data: np.ndarray | None = None  # constant tensors only


@dataclass
class Operator:
    op: str  # e.g. "CONV_2D"
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TfliteModel:
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]


class _Buf:
    """FlatBuffer access: tables (vtable lookups), vectors, strings, scalars."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def u32(self, pos: int) -> int:
        return struct.unpack_from("<I", self.data, pos)[0]

    def root(self) -> int:
        return self.u32(0)

    def field_pos(self, table: int, number: int) -> int | None:
        vtable = table - struct.unpack_from("<i", self.data, table)[0]
        vsize = struct.unpack_from("<H", self.data, vtable)[0]
        slot = 4 + 2 * number
        if slot >= vsize:
            return None
        off = struct.unpack_from("<H", self.data, vtable + slot)[0]
        return table + off if off else None

    def scalar(self, table: int, number: int, fmt: str, default: Any) -> Any:
        pos = self.field_pos(table, number)
        return default if pos is None else struct.unpack_from("<" + fmt, self.data, pos)[0]

    def ref(self, table: int, number: int) -> int | None:
        """Position of the table, vector or string an offset field points to."""
        pos = self.field_pos(table, number)
        return None if pos is None else pos + self.u32(pos)

    def vector(self, table: int, number: int) -> tuple[int, int]:
        """(position of the first element, length); (0, 0) when absent."""
        pos = self.ref(table, number)
        return (0, 0) if pos is None else (pos + 4, self.u32(pos))

    def tables(self, table: int, number: int) -> list[int]:
        start, n = self.vector(table, number)
        return [start + 4 * i + self.u32(start + 4 * i) for i in range(n)]

    def ints(self, table: int, number: int) -> list[int]:
        start, n = self.vector(table, number)
        return list(struct.unpack_from(f"<{n}i", self.data, start)) if n else []

    def string(self, table: int, number: int) -> str:
        start, n = self.vector(table, number)
        return self.data[start : start + n].decode("utf-8", "replace") if n else ""


def parse_tflite(data: bytes) -> TfliteModel:
    """The first subgraph of a ``.tflite`` file's bytes; :class:`ModelError` when it is not one
    or uses an operator this reader does not know."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError("not a TensorFlow Lite file (no TFL3 identifier)")
    try:
        return _parse(_Buf(data))
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ModelError(f"damaged TensorFlow Lite file ({exc})") from None


def _parse(buf: _Buf) -> TfliteModel:
    model = buf.root()
    codes = []
    for oc in buf.tables(model, 1):
        deprecated = buf.scalar(oc, 0, "b", 0)
        code = max(deprecated, buf.scalar(oc, 3, "i", 0))
        if code not in BUILTIN:
            raise ModelError(f"TensorFlow Lite operator {code} is not supported by this reader")
        codes.append(BUILTIN[code])
    buffers = buf.tables(model, 4)
    subgraphs = buf.tables(model, 2)
    if not subgraphs:
        raise ModelError("TensorFlow Lite file has no subgraph")
    graph = subgraphs[0]

    tensors = []
    for i, t in enumerate(buf.tables(graph, 0)):
        type_code = buf.scalar(t, 1, "b", 0)
        if type_code not in DTYPES:
            raise ModelError(f"tensor type {type_code} is not supported by this reader")
        dtype = DTYPES[type_code]
        shape = tuple(buf.ints(t, 0))
        tensor = Tensor(i, buf.string(t, 3), shape, dtype)
        b = buf.scalar(t, 2, "I", 0)
        if b and b < len(buffers):
            start, n = buf.vector(buffers[b], 0)
            if n:
                arr = np.frombuffer(buf.data, dtype=dtype, count=n // np.dtype(dtype).itemsize, offset=start)
                tensor.data = arr.reshape(shape) if shape else arr.copy()
        tensors.append(tensor)

    operators = []
    for o in buf.tables(graph, 3):
        name = codes[buf.scalar(o, 0, "I", 0)]
        options: dict[str, Any] = {}
        spec = OPTION_FIELDS.get(name)
        opt_table = buf.ref(o, 4)
        if spec:
            for key, (number, fmt, default) in spec.items():
                options[key] = default if opt_table is None else buf.scalar(opt_table, number, fmt, default)
        operators.append(Operator(name, buf.ints(o, 1), buf.ints(o, 2), options))
    return TfliteModel(tensors, operators, buf.ints(graph, 1), buf.ints(graph, 2))


def read_tflite(path: Path) -> TfliteModel:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_tflite(data)

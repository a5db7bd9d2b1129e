"""Reader for dlib's serialised face ResNet (``dlib_face_recognition_resnet_model_v1.dat``).

Owns the pure-Python parsing of dlib's DNN serialisation format and the layer list of
dlib's face-recognition network (``anet_type`` of dlib's face recognition example), so the
weights can be rebuilt in another runtime (see :mod:`facefleet.vision.onnx_embedder`).

Format notes (written from reading dlib's sources, no code copied):

- integers: one control byte (low nibble = number of bytes, bit 7 = negative), then the
  magnitude's bytes, little-endian; strings: such an integer length, then the bytes;
  bools: one ASCII byte ``'1'``/``'0'``; float/double scalars: dlib's portable encoding,
  an integer mantissa then an integer exponent (value = mantissa * 2**exponent; exponents
  32000/32001/32002 mean +inf/-inf/nan).
- tensors (version 2): ``n, k, nr, nc`` then ``n*k*nr*nc`` little-endian IEEE float32,
  row-major NCHW. ``alias_tensor`` (version 1): ``n, k, nr, nc`` only.
- a network is written outermost first: ``add_loss_layer`` (version, loss details,
  subnet); ``add_layer`` (version 2, subnet, layer details, three bools, three tensors);
  ``add_tag_layer``/``add_skip_layer`` (version 1, subnet); the ``add_layer`` right on the
  input layer is version 2 or 3 (3 appends the sample expansion factor). The stream
  therefore holds every layer's version on the way down, the input layer, then each
  layer's details on the way up.
- ``con_4``: params (filters then biases), num_filters, nr, nc, stride y/x, padding y/x,
  filter and bias alias tensors, four doubles. ``affine_``: params (gamma then beta), gamma
  and beta alias tensors, mode. ``fc_2``: num_outputs, num_inputs, params (a
  num_inputs x num_outputs matrix, plus a last bias row when it has a bias), aliases, bias
  mode, four doubles. pools (``max_pool_2``/``avg_pool_2``): nr, nc, stride y/x, padding y/x
  (nr = nc = 0: the whole plane). ``input_rgb_image_sized``: mean red, green, blue, NR, NC;
  the input is ``(pixel - mean) / 256`` with channels R, G, B.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facefleet.errors import ModelError


class DlibModelFormatError(ModelError):
    """The file is not (or no longer) the dlib face ResNet this reader understands."""


_IDENT = re.compile(rb"[A-Za-z][A-Za-z0-9_]*\Z")


@dataclass
class Layer:
    """One entry of the network, bottom-up: a computational layer, or a tag/skip marker."""

    kind: str  # dlib details name ("con_4", "affine_", ...) or "marker" for tag/skip
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class DlibNet:
    """A parsed network: input normalisation, layers bottom-up, and the loss."""

    input_kind: str
    mean_rgb: tuple[float, float, float]
    input_size: tuple[int, int]
    layers: list[Layer]
    loss_kind: str
    loss_params: dict[str, float]


class _Reader:
    """Cursor over the bytes of one file, raising :class:`DlibModelFormatError` on any surprise."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.source = source

    def fail(self, what: str) -> DlibModelFormatError:
        return DlibModelFormatError(
            f"{self.source}: not a dlib face ResNet model file this version can read: "
            f"{what} (at byte {self.pos} of {len(self.data)})"
        )

    def _take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"file ends early (wanted {n} more bytes)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int_(self) -> int:
        ctrl = self._take(1)[0]
        size = ctrl & 0x0F
        if size == 0 or size > 8 or ctrl & 0x70:
            self.pos -= 1
            raise self.fail(f"bad integer control byte 0x{ctrl:02x}")
        value = int.from_bytes(self._take(size), "little")
        return -value if ctrl & 0x80 else value

    def float_(self) -> float:
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self.fail("old ASCII float encoding is not supported")
        mantissa = self.int_()
        exponent = self.int_()
        if exponent == 32000:
            return math.inf
        if exponent == 32001:
            return -math.inf
        if exponent == 32002:
            return math.nan
        return math.ldexp(mantissa, exponent)

    def bool_(self) -> bool:
        ch = bytes(self._take(1))
        if ch not in (b"0", b"1"):
            self.pos -= 1
            raise self.fail(f"expected a serialised bool, found {ch!r}")
        return ch == b"1"

    def peek_string(self) -> str | None:
        """The identifier-like string at the cursor (not consumed), else None."""
        start = self.pos
        try:
            n = self.int_()
            if not 3 <= n <= 64 or self.pos + n > len(self.data):
                return None
            raw = bytes(self.data[self.pos : self.pos + n])
            return raw.decode("ascii") if _IDENT.match(raw) else None
        except DlibModelFormatError:
            return None
        finally:
            self.pos = start

    def string(self) -> str:
        n = self.int_()
        if not 0 <= n <= 1024:
            raise self.fail(f"implausible string length {n}")
        return bytes(self._take(n)).decode("latin-1")

    def tensor(self) -> np.ndarray:
        version = self.int_()
        if version != 2:
            raise self.fail(f"tensor serialisation version {version} (only version 2 is read)")
        n, k, nr, nc = (self.int_() for _ in range(4))
        if min(n, k, nr, nc) < 0 or n * k * nr * nc > 50_000_000:
            raise self.fail(f"implausible tensor shape {(n, k, nr, nc)}")
        count = n * k * nr * nc
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(n, k, nr, nc)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        version = self.int_()
        if version != 1:
            raise self.fail(f"alias_tensor serialisation version {version}")
        n, k, nr, nc = (self.int_() for _ in range(4))
        return n, k, nr, nc


# ---------------------------------------------------------------------------------------
# layer details


def _read_con(r: _Reader) -> dict[str, Any]:
    params = r.tensor().reshape(-1)
    num_filters, nr, nc = r.int_(), r.int_(), r.int_()
    stride = (r.int_(), r.int_())
    padding = (r.int_(), r.int_())
    filt = r.alias_tensor()
    bias = r.alias_tensor()
    for _ in range(4):  # learning-rate and weight-decay multipliers
        r.float_()
    n_w = math.prod(filt)
    if filt[0] != num_filters or filt[2:] != (nr, nc) or params.size != n_w + math.prod(bias):
        raise r.fail(f"con_ sizes disagree: params {params.size}, filters {filt}, bias {bias}")
    weights = params[:n_w].reshape(filt)
    biases = params[n_w:] if math.prod(bias) else np.zeros(num_filters, np.float32)
    return {"weights": weights, "bias": biases, "stride": stride, "padding": padding}


def _read_affine(r: _Reader) -> dict[str, Any]:
    params = r.tensor().reshape(-1)
    gamma = r.alias_tensor()
    beta = r.alias_tensor()
    mode = r.int_()
    g = math.prod(gamma)
    if g != math.prod(beta) or params.size != 2 * g:
        raise r.fail(f"affine_ sizes disagree: params {params.size}, gamma {gamma}, beta {beta}")
    return {"gamma": params[:g], "beta": params[g:], "mode": mode}


def _read_pool(r: _Reader) -> dict[str, Any]:
    nr, nc, sy, sx, py, px = (r.int_() for _ in range(6))
    return {"window": (nr, nc), "stride": (sy, sx), "padding": (py, px)}


def _read_fc(r: _Reader) -> dict[str, Any]:
    num_outputs, num_inputs = r.int_(), r.int_()
    params = r.tensor().reshape(-1)
    r.alias_tensor()
    r.alias_tensor()
    r.int_()  # bias mode
    for _ in range(4):
        r.float_()
    n_w = num_inputs * num_outputs
    if params.size == n_w:
        bias = None
    elif params.size == n_w + num_outputs:
        bias = params[n_w:]  # the bias is the matrix's last row
    else:
        raise r.fail(f"fc_ params {params.size} do not fit {num_inputs}x{num_outputs}")
    return {"weights": params[:n_w].reshape(num_inputs, num_outputs), "bias": bias}


_DETAILS = {
    "con_4": _read_con,
    "affine_": _read_affine,
    "relu_": lambda r: {},
    "add_prev_": lambda r: {},
    "max_pool_2": _read_pool,
    "avg_pool_2": _read_pool,
    "fc_2": _read_fc,
}


def parse_dlib_net(data: bytes, source: str = "<bytes>") -> DlibNet:
    """Parse a serialised dlib ``loss_metric`` network of the layer types above."""
    r = _Reader(data, source)
    version = r.int_()
    if version != 1:
        raise r.fail(f"add_loss_layer version {version}")
    loss_kind = r.string()
    if loss_kind != "loss_metric_2":
        raise r.fail(f"loss layer {loss_kind!r} (expected loss_metric_2)")
    loss_params = {"margin": r.float_(), "distance_threshold": r.float_()}

    versions: list[int] = []  # outermost first
    while r.peek_string() is None:
        v = r.int_()
        if v not in (1, 2, 3) or len(versions) > 10_000:
            raise r.fail(f"unexpected layer version {v}")
        versions.append(v)

    input_kind = r.string()
    if input_kind != "input_rgb_image_sized":
        raise r.fail(f"input layer {input_kind!r} (expected input_rgb_image_sized)")
    mean_rgb = (r.float_(), r.float_(), r.float_())
    input_size = (r.int_(), r.int_())

    layers: list[Layer] = []
    for v in reversed(versions):  # innermost first: the details follow each subnet
        if v == 1:  # add_tag_layer / add_skip_layer: nothing after the subnet
            layers.append(Layer("marker"))
            continue
        kind = r.string()
        reader = _DETAILS.get(kind)
        if reader is None:
            raise r.fail(f"unsupported layer {kind!r}")
        params = reader(r)
        for _ in range(3):
            r.bool_()
        for _ in range(3):  # x_grad, cached_output, params_grad/grad_final: not needed
            r.tensor()
        if v == 3:  # the layer on the input: version 3 adds the sample expansion factor
            r.int_()
        layers.append(Layer(kind, params))
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} unexpected bytes after the network")
    return DlibNet(input_kind, mean_rgb, input_size, layers, loss_kind, loss_params)


def read_dlib_net(path: Path) -> DlibNet:
    """Parse the file at ``path`` (see :func:`parse_dlib_net`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DlibModelFormatError(f"{path}: cannot read the dlib model file: {exc}") from None
    return parse_dlib_net(data, str(path))


# ---------------------------------------------------------------------------------------
# the face network's layout (dlib's face recognition example, inference form)


def face_resnet_layout() -> list[tuple]:
    """The face ResNet bottom-up, with tag ids (which the file does not store).

    Entries: ``("con", filters, kernel, stride)``, ``("affine",)``, ``("relu",)``,
    ``("max_pool", window, stride)``, ``("avg_pool", window, stride)``, ``("tag", id)``,
    ``("skip", id)``, ``("add_prev", id)``, ``("avg_pool_all",)``, ``("fc", outputs)``.
    """

    def block(n: int, stride: int) -> list[tuple]:
        return [("con", n, 3, stride), ("affine",), ("relu",), ("con", n, 3, 1), ("affine",)]

    def ares(n: int) -> list[tuple]:
        return [("tag", 1), *block(n, 1), ("add_prev", 1), ("relu",)]

    def ares_down(n: int) -> list[tuple]:
        return [
            ("tag", 1),
            *block(n, 2),
            ("tag", 2),
            ("skip", 1),
            ("avg_pool", 2, 2),
            ("add_prev", 2),
            ("relu",),
        ]

    out: list[tuple] = [("con", 32, 7, 2), ("affine",), ("relu",), ("max_pool", 3, 2)]
    out += ares(32) * 3
    out += ares_down(64) + ares(64) * 3
    out += ares_down(128) + ares(128) * 2
    out += ares_down(256) + ares(256) * 2
    out += ares_down(256)
    out += [("avg_pool_all",), ("fc", 128)]
    return out


_KIND_OF = {
    "con": "con_4",
    "affine": "affine_",
    "relu": "relu_",
    "max_pool": "max_pool_2",
    "avg_pool": "avg_pool_2",
    "avg_pool_all": "avg_pool_2",
    "add_prev": "add_prev_",
    "fc": "fc_2",
    "tag": "marker",
    "skip": "marker",
}


def check_face_resnet(net: DlibNet, source: str = "model") -> list[tuple[tuple, Layer]]:
    """Pair the parsed layers with :func:`face_resnet_layout`, checking every shape."""
    layout = face_resnet_layout()
    if len(net.layers) != len(layout):
        raise DlibModelFormatError(
            f"{source}: {len(net.layers)} layers, expected the face ResNet's {len(layout)}"
        )
    pairs = []
    for i, (spec, layer) in enumerate(zip(layout, net.layers, strict=True)):
        want = _KIND_OF[spec[0]]
        bad = layer.kind != want
        p = layer.params
        if not bad and spec[0] == "con":
            w = p["weights"]
            bad = w.shape[0] != spec[1] or w.shape[2:] != (spec[2], spec[2])
            bad = bad or p["stride"] != (spec[3], spec[3])
        elif not bad and spec[0] in ("max_pool", "avg_pool"):
            bad = p["window"] != (spec[1], spec[1]) or p["stride"] != (spec[2], spec[2])
        elif not bad and spec[0] == "avg_pool_all":
            bad = p["window"] != (0, 0)
        elif not bad and spec[0] == "fc":
            bad = p["weights"].shape[1] != spec[1]
        if bad:
            raise DlibModelFormatError(
                f"{source}: layer {i} (from the input) is {layer.kind} {_describe(p)}, expected {spec}"
            )
        pairs.append((spec, layer))
    if net.input_size != (150, 150):
        raise DlibModelFormatError(f"{source}: input size {net.input_size}, expected 150x150")
    return pairs


def _describe(params: dict[str, Any]) -> str:
    return str({k: (v.shape if isinstance(v, np.ndarray) else v) for k, v in params.items()})

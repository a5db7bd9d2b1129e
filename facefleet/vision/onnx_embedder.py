"""The fast face embedder: dlib's face ResNet rebuilt as an ONNX graph, run by ONNX Runtime.

Owns the conversion of dlib's ``dlib_face_recognition_resnet_model_v1.dat`` into ONNX (pure
Python, see :mod:`facefleet.vision.dlib_dnn` for the file format), its on-disk cache, the
one-time check against dlib, and :class:`OnnxEmbedder` (the ``onnx`` embedder of
:func:`facefleet.vision.embed.make_embedder`).

- The conversion runs once per machine and weights file: ``<cache>/onnx/`` holds
  ``dlib-resnet-v1-<sha16>-c<N>.onnx`` (``sha16``: the .dat's sha256, ``N``: the converter's
  version) and ``...verify.json`` (the comparison with dlib). ``<cache>`` is the workspace's
  ``cache/`` when given, else ``~/.cache/facefleet`` (``$XDG_CACHE_HOME/facefleet`` when set).
  Nothing is downloaded; no converted weights ship with the package.
- The graph takes the chips as they are (N x 150 x 150 x 3 uint8 RGB) and returns N x 128
  float32; each batch-norm-turned-affine layer is folded into the convolution before it.
- The id is dlib's (:func:`facefleet.vision.embed.dlib_embedder_id`) when the ONNX vectors
  match dlib's within :data:`MATCH_TOLERANCE` (L2) on the reference chips, so stored vectors
  stay comparable; otherwise ``dlib-resnet-v1-onnx:<sha16>`` and a warning.
- Providers: TensorRT, then CUDA, then CPU, whichever this onnxruntime build offers (a GPU
  build such as ``onnxruntime-gpu`` is needed for the first two; untested here). The check
  against dlib runs with the providers in use and is redone when they change.
- Threads: ``threads`` argument, else ``FACEFLEET_ONNX_THREADS``, else 1 inside a
  multiprocessing worker (the pool already spreads work over the cores), else the cores this
  process may use, at most 4. Threads do not busy-wait between runs unless ``spin=True``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from facefleet.errors import ModelError
from facefleet.fileio import atomic_write_bytes, atomic_write_text
from facefleet.vision.dlib_dnn import DlibNet, check_face_resnet, read_dlib_net
from facefleet.vision.embed import CHIP_SIZE
from facefleet.vision.models import file_sha256, model_path
from facefleet.vision.onnx_graph import GraphBuilder, cached_verification, load_cached

log = logging.getLogger(__name__)

CONVERTER_VERSION = 1
MATCH_TOLERANCE = 1e-3  # max L2 distance to dlib's vector for "the same embedder"
OPSET = 13
_PREFERRED_PROVIDERS = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/facefleet`` or ``~/.cache/facefleet``."""
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "facefleet"


def source_path() -> Path:
    """The dlib weights file converted (a function so tests can point it elsewhere)."""
    return model_path("resnet")


def default_threads() -> int:
    """``FACEFLEET_ONNX_THREADS``; else 1 in a worker process; else usable cores, at most 4."""
    env = os.environ.get("FACEFLEET_ONNX_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            log.warning("FACEFLEET_ONNX_THREADS=%r is not a number; ignored", env)
    import multiprocessing

    if multiprocessing.parent_process() is not None:  # a pool worker: one core each already
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


# ---------------------------------------------------------------------------------------
# conversion


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return 1 + (size + 2 * pad - kernel) // stride


def build_onnx(net: DlibNet, source_sha256: str = "", *, fold_affine: bool = True) -> Any:
    """The ONNX model (``onnx.ModelProto``) computing ``net`` on uint8 NHWC RGB chips."""
    from onnx import TensorProto, helper

    pairs = check_face_resnet(net)
    g = GraphBuilder()
    nr, nc = net.input_size
    x = g.op("Cast", ["chips"], "as_float", to=TensorProto.FLOAT)
    x = g.op("Transpose", [x], "nchw", perm=[0, 3, 1, 2])
    mean = np.asarray(net.mean_rgb, np.float32).reshape(1, 3, 1, 1)
    x = g.op("Sub", [x, g.const("mean_rgb", mean)], "centred")
    # dlib divides by 256: a power of two, so multiplying is exact
    x = g.op("Mul", [x, g.const("inv_256", np.asarray(1 / 256, np.float32))], "input")
    shape = (3, nr, nc)  # C, H, W of x
    tags: dict[int, tuple[str, tuple[int, int, int]]] = {}
    i = 0
    while i < len(pairs):
        spec, layer = pairs[i]
        p = layer.params
        kind = spec[0]
        if kind == "con":
            w = p["weights"].astype(np.float32)
            b = p["bias"].astype(np.float32)
            if fold_affine and i + 1 < len(pairs) and pairs[i + 1][0][0] == "affine":
                gamma, beta = pairs[i + 1][1].params["gamma"], pairs[i + 1][1].params["beta"]
                w = w * gamma.reshape(-1, 1, 1, 1)
                b = b * gamma + beta
                i += 1
            (sy, sx), (py, px) = p["stride"], p["padding"]
            x = g.op(
                "Conv",
                [x, g.const("conv_w", w), g.const("conv_b", b)],
                "conv",
                kernel_shape=list(w.shape[2:]),
                strides=[sy, sx],
                pads=[py, px, py, px],
            )
            shape = (
                w.shape[0],
                _conv_out(shape[1], w.shape[2], sy, py),
                _conv_out(shape[2], w.shape[3], sx, px),
            )
        elif kind == "affine":
            c = shape[0]
            x = g.op("Mul", [x, g.const("gamma", p["gamma"].reshape(1, c, 1, 1))], "scale")
            x = g.op("Add", [x, g.const("beta", p["beta"].reshape(1, c, 1, 1))], "shift")
        elif kind == "relu":
            x = g.op("Relu", [x])
        elif kind in ("max_pool", "avg_pool"):
            (kh, kw), (sy, sx), (py, px) = p["window"], p["stride"], p["padding"]
            attrs: dict[str, Any] = {
                "kernel_shape": [kh, kw],
                "strides": [sy, sx],
                "pads": [py, px, py, px],
            }
            if kind == "avg_pool":
                attrs["count_include_pad"] = 0
            x = g.op("MaxPool" if kind == "max_pool" else "AveragePool", [x], kind, **attrs)
            shape = (shape[0], _conv_out(shape[1], kh, sy, py), _conv_out(shape[2], kw, sx, px))
        elif kind == "avg_pool_all":
            x = g.op("GlobalAveragePool", [x], "avg_all")
            shape = (shape[0], 1, 1)
        elif kind == "tag":
            tags[spec[1]] = (x, shape)
        elif kind == "skip":
            x, shape = tags[spec[1]]
        elif kind == "add_prev":
            other, other_shape = tags[spec[1]]
            # dlib adds tensors of different sizes as if the smaller were zero-padded at the
            # end of each dimension (more channels, more rows, more columns)
            target = tuple(max(a, b) for a, b in zip(shape, other_shape, strict=True))
            x = _pad_to(g, x, shape, target)
            other = _pad_to(g, other, other_shape, target)
            x = g.op("Add", [x, other], "add_prev")
            shape = target
        elif kind == "fc":
            x = g.op("Flatten", [x], "flat", axis=1)
            x = g.op("MatMul", [x, g.const("fc_w", p["weights"])], "fc")
            if p["bias"] is not None:
                x = g.op("Add", [x, g.const("fc_b", p["bias"])], "fc_bias")
            shape = (p["weights"].shape[1],)
        else:  # pragma: no cover - layout and builder disagree
            raise ModelError(f"converter: unhandled layer {spec}")
        i += 1
    g.nodes.append(helper.make_node("Identity", [x], ["embeddings"], name="embeddings"))

    return g.model(
        "dlib_face_resnet_v1",
        [helper.make_tensor_value_info("chips", TensorProto.UINT8, ["N", nr, nc, 3])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", shape[0]])],
        opset=OPSET,
        converter_version=CONVERTER_VERSION,
        source="dlib_face_recognition_resnet_model_v1.dat",
        source_sha256=source_sha256,
    )


def _pad_to(g: GraphBuilder, x: str, shape: tuple, target: tuple) -> str:
    if shape == target:
        return x
    ends = [t - s for s, t in zip(shape, target, strict=True)]
    pads = np.asarray([0, 0, 0, 0, 0, *ends], np.int64)
    return g.op("Pad", [x, g.const("pads", pads)], "pad", mode="constant")


def convert(dat_path: Path, source_sha256: str | None = None) -> bytes:
    """Serialised ONNX bytes of the dlib face ResNet at ``dat_path``."""
    import onnx

    sha = source_sha256 or file_sha256(Path(dat_path))
    model = build_onnx(read_dlib_net(Path(dat_path)), sha)
    onnx.checker.check_model(model)
    return model.SerializeToString()


# ---------------------------------------------------------------------------------------
# reference chips for the one-time check against dlib


def reference_chips(n: int = 4, seed: int = 20170212) -> np.ndarray:
    """``n`` deterministic 150x150 RGB test patterns (noise, smooth blobs, gradients)."""
    rng = np.random.default_rng(seed)
    size = CHIP_SIZE
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    chips = []
    for i in range(n):
        kind = i % 3
        if kind == 0:  # full-range noise
            chip = rng.integers(0, 256, (size, size, 3))
        elif kind == 1:  # smooth blobs: a coarse random grid, upsampled
            coarse = rng.uniform(0, 255, (6, 6, 3))
            idx = np.minimum((np.arange(size) * 6) // size, 5)
            chip = coarse[idx][:, idx] * 0.7 + rng.normal(0, 20, (size, size, 3))
        else:  # gradients and a bright disc, face-sized
            disc = ((xx - 0.5) ** 2 + (yy - 0.45) ** 2 < 0.12).astype(np.float32)
            base = np.stack([xx * 200, yy * 180, (1 - xx) * 160], axis=-1)
            chip = base + disc[..., None] * rng.uniform(40, 90, 3) + rng.normal(0, 8, base.shape)
        chips.append(np.clip(chip, 0, 255).astype(np.uint8))
    return np.stack(chips)


def _dlib_vectors(dat_path: Path, chips: np.ndarray) -> np.ndarray:
    import dlib

    net = dlib.face_recognition_model_v1(str(dat_path))
    return np.stack([np.asarray(net.compute_face_descriptor(np.ascontiguousarray(c))) for c in chips]).astype(
        np.float32
    )


# ---------------------------------------------------------------------------------------
# the embedder


class OnnxEmbedder:
    """dlib's face ResNet in ONNX Runtime: N x 150 x 150 x 3 uint8 RGB chips -> N x 128."""

    def __init__(
        self,
        onnx_bytes: bytes,
        embedder_id: str,
        *,
        threads: int | None = None,
        providers: list[str] | None = None,
        batch_size: int = 32,
        spin: bool = False,
    ) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or default_threads()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting between runs: the cores are shared with detection and other work
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        opts.log_severity_level = 3
        available = set(ort.get_available_providers())
        chosen = providers or [p for p in _PREFERRED_PROVIDERS if p in available]
        self._session = ort.InferenceSession(onnx_bytes, sess_options=opts, providers=chosen)
        self.providers: list[str] = list(self._session.get_providers())
        self.threads: int = opts.intra_op_num_threads
        self.batch_size = max(1, int(batch_size))
        self.id = embedder_id
        self.onnx_bytes = onnx_bytes
        self.verification: dict[str, Any] = {}

    @classmethod
    def create(
        cls,
        cache_dir: Path | None = None,
        *,
        threads: int | None = None,
        providers: list[str] | None = None,
        batch_size: int = 32,
        verify: bool = True,
        spin: bool = False,
    ) -> OnnxEmbedder:
        """Convert (or load the cached conversion), check once against dlib, and open it.

        Raises :class:`~facefleet.errors.ModelError` with a one-line reason when the weights
        cannot be read or converted.
        """
        src = source_path()
        sha = file_sha256(src)
        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        folder = folder / "onnx"
        stem = f"dlib-resnet-v1-{sha[:16]}-c{CONVERTER_VERSION}"
        onnx_path = folder / f"{stem}.onnx"
        verify_path = folder / f"{stem}.verify.json"

        data = load_cached(onnx_path, sha, "ONNX face model")
        if data is None:
            t0 = time.perf_counter()
            data = convert(src, sha)
            try:
                atomic_write_bytes(onnx_path, data)
            except OSError as exc:  # a read-only cache still gives a working embedder
                log.warning("could not cache the ONNX face model at %s: %s", onnx_path, exc)
            log.info("converted %s to ONNX in %.1f s", src.name, time.perf_counter() - t0)

        same_id = _dlib_id_for(src, sha)
        emb = cls(data, same_id, threads=threads, providers=providers, batch_size=batch_size, spin=spin)
        if verify:
            result = cached_verification(verify_path, data, providers=emb.providers)
            if result is None:
                result = emb._verify_against_dlib(src, data)
                try:
                    atomic_write_text(verify_path, json.dumps(result, indent=1) + "\n")
                except OSError as exc:
                    log.warning("could not cache the ONNX check at %s: %s", verify_path, exc)
            emb.verification = result
            if not result.get("matches"):
                emb.id = f"dlib-resnet-v1-onnx:{sha[:16]}"
                log.warning(
                    "ONNX face embeddings differ from dlib's (max L2 %s): using id %s",
                    result.get("max_l2"),
                    emb.id,
                )
        return emb

    def _verify_against_dlib(self, src: Path, onnx_bytes: bytes) -> dict[str, Any]:
        import onnxruntime as ort

        chips = reference_chips()
        ours = self.embed(chips)
        result: dict[str, Any] = {
            "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
            "onnxruntime": ort.__version__,
            "providers": self.providers,
            "chips": len(chips),
            "tolerance": MATCH_TOLERANCE,
        }
        try:
            ref = _dlib_vectors(src, chips)
        except Exception as exc:  # no dlib here: cannot claim dlib's id
            result.update(matches=False, max_l2=None, error=f"dlib unavailable: {exc}")
            return result
        max_l2 = float(np.linalg.norm(ours - ref, axis=1).max())
        result.update(matches=bool(max_l2 < MATCH_TOLERANCE), max_l2=max_l2)
        return result

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """N x 150 x 150 x 3 uint8 RGB chips (or one chip) -> N x 128 float32."""
        chips = np.asarray(chips, dtype=np.uint8)
        if chips.ndim == 3:
            chips = chips[None]
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"expected N x {CHIP_SIZE} x {CHIP_SIZE} x 3 chips, got {chips.shape}")
        out = np.empty((len(chips), 128), dtype=np.float32)
        for start in range(0, len(chips), self.batch_size):
            batch = np.ascontiguousarray(chips[start : start + self.batch_size])
            out[start : start + len(batch)] = self._session.run(None, {"chips": batch})[0]
        return out


def _dlib_id_for(src: Path, sha: str) -> str:
    from facefleet.vision.embed import dlib_embedder_id

    if Path(src) == model_path("resnet"):
        return dlib_embedder_id()
    return f"dlib-resnet-v1:{sha[:16]}"

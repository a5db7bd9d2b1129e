"""Typed settings of a workspace (``facefleet.yaml``): one validated tree, read once.

The tree is plain frozen dataclasses, one per section; validation is driven by the type
annotations, so **adding a field is one line** in its section::

    workers: int = setting(0, lo=0, hi=256)          # bounds
    detector: str = setting("hog", choices=DETECTORS)  # a fixed set of words
    experiment: str = "facefleet"                      # any value of the annotated type

and **adding a section** is a frozen dataclass plus one line in :class:`Settings`
(``compute: ComputeSettings = field(default_factory=ComputeSettings)``). Supported
annotations: ``bool``, ``int``, ``float`` (finite), ``str``, ``X | None``, a nested section
and ``dict[str, Any]`` (a free mapping its owner validates, e.g. ``train`` and ``validate``).

Every bad value is a :class:`~facefleet.errors.ConfigError` naming the file and the key.
This module sits at the bottom layer: it imports nothing else from facefleet but errors.
"""

from __future__ import annotations

import math
import re
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from facefleet.errors import ConfigError

CONFIG_NAME = "facefleet.yaml"
PUBLIC_KEY_NAME = "signing_key.pub.pem"
PRIVATE_KEY_NAME = "signing_key.pem"
DEFAULT_MODEL_NAME = "face_model"

# Registry model names become folder names on servers and devices.
MODEL_NAME_RULE = "1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"

# keep in step with vision.detect.DETECTOR_NAMES and vision.embed.EMBEDDER_NAMES
DETECTORS = ("hog", "cnn", "haar", "blazeface", "blazeface-short")
EMBEDDERS = ("auto", "dlib", "onnx", "onnx-int8")


def check_model_name(value: Any, where: str, key: str = "registry.model_name") -> str:
    """``value`` if it is a safe model name (see ``MODEL_NAME_RULE``), else a ConfigError."""
    if not isinstance(value, str) or not re.fullmatch(MODEL_NAME_PATTERN, value):
        raise ConfigError(f"{where}: {key} must be {MODEL_NAME_RULE}; got {value!r}")
    return value


def setting(
    default: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[Any, ...] | None = None,
    pattern: str | None = None,
    rule: str | None = None,
) -> Any:
    """A field with bounds (``lo``/``hi`` inclusive), a set of ``choices`` or a regex ``pattern``
    (``rule`` says the pattern in words for the error message)."""
    meta = {"lo": lo, "hi": hi, "choices": choices, "pattern": pattern, "rule": rule}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


# -- sections ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class VisionSettings:
    detector: str = setting("hog", choices=DETECTORS)
    upsample: int = setting(1, lo=0, hi=4)  # HOG/CNN upsampling (0 is faster, misses small faces)
    max_side: int = setting(1024, lo=64, hi=20000)  # detect on a copy no larger than this
    fallback_detector: str | None = setting("cnn", choices=(*DETECTORS, "none", ""))
    fallback_max_side: int = setting(640, lo=64, hi=20000)  # the CNN is slow: a smaller copy
    embedder: str = setting("auto", choices=EMBEDDERS)
    workers: int = setting(0, lo=0, hi=256)  # processes for batch work; 0 = one per core


@dataclass(frozen=True)
class EdgeSettings:
    """``facefleet recognize`` on a device; ``vision`` stays the enrolment (server) engine."""

    detector: str = setting("blazeface", choices=DETECTORS)  # hog when BlazeFace is unavailable
    # the face engine runs in a child process, restarted when native code kills it on a frame
    isolate: bool = True
    max_restarts: int = setting(5, lo=0, hi=1000)  # more crashes within restart_window: give up
    restart_window: float = setting(60.0, lo=1, hi=86400)  # seconds


@dataclass(frozen=True)
class QualitySettings:
    min_face_px: int = setting(30, lo=0)  # shorter side of the face box, in pixels
    min_sharpness: float = setting(15.0, lo=0)  # variance of the Laplacian on the aligned chip
    # 1 = nose centred between the eyes, 0.5 = three times nearer one eye (a turned head).
    # bench/bench_quality_gate.py: the lowest of 1,192 shared one-face photos is 0.695 (1st
    # percentile 0.82), so 0.5 loses none of them.
    min_frontalness: float = setting(0.5, lo=0, hi=1)
    min_brightness: float = setting(20.0, lo=0, hi=255)
    max_brightness: float = setting(240.0, lo=0, hi=255)
    reject_greyscale: bool = False  # greyscale / IR faces are flagged; true refuses them


@dataclass(frozen=True)
class IdentifySettings:
    distance_threshold: float = setting(0.6, lo=0, hi=4)


@dataclass(frozen=True)
class MlflowSettings:
    tracking_uri: str | None = None  # default: sqlite:///<workspace>/mlflow.db; or postgresql://...
    experiment: str = "facefleet"
    artifacts: str | None = None  # runs' artifacts (default: <workspace>/artifacts); a shared folder


SCHEDULER_PATTERN = r"(tcp|tls|inproc|ucx)://[^\s/]+(:\d+)?/?"
SEND_MODES = ("auto", "paths", "bytes")


@dataclass(frozen=True)
class ComputeSettings:
    """Where the heavy server work runs (docs/scaling.md); no scheduler: locally."""

    scheduler: str | None = setting(None, pattern=SCHEDULER_PATTERN, rule="an address like tcp://HOST:8786")
    retries: int = setting(2, lo=0, hi=100)  # a task that raised is tried again this many times
    chunk: int = setting(8, lo=1, hi=100_000)  # files per task
    send: str = setting("auto", choices=SEND_MODES)  # paths | bytes | auto (paths on loopback)
    connect_timeout: float = setting(30.0, lo=0.1, hi=3600)  # seconds


@dataclass(frozen=True)
class RegistrySettings:
    model_name: str = setting(DEFAULT_MODEL_NAME, pattern=MODEL_NAME_PATTERN, rule=MODEL_NAME_RULE)


@dataclass(frozen=True)
class FleetSettings:
    inventory: str | None = None  # inventory file (default: <workspace>/inventory.yaml)
    known_hosts: str | None = None  # SSH known_hosts for deployments (default: ~/.ssh/known_hosts)


@dataclass(frozen=True)
class ConsoleSettings:
    """The web console (``facefleet serve``)."""

    session_hours: float = setting(12.0, lo=0.05, hi=24 * 90)  # how long a sign-in lasts
    max_upload_mb: float = setting(20.0, lo=0.1, hi=2048)  # per request
    secure_cookie: bool = False  # set when the console is served over HTTPS
    page_size: int = setting(20, lo=1, hi=500)  # clusters per review page

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


@dataclass(frozen=True)
class Settings:
    """The whole ``facefleet.yaml``."""

    vision: VisionSettings = field(default_factory=VisionSettings)
    quality: QualitySettings = field(default_factory=QualitySettings)
    identify: IdentifySettings = field(default_factory=IdentifySettings)
    train: dict[str, Any] = setting({})  # a version-YAML document, validated by train.config
    validate: dict[str, Any] = setting({})  # curate.validate.Policy, validated there
    mlflow: MlflowSettings = field(default_factory=MlflowSettings)
    compute: ComputeSettings = field(default_factory=ComputeSettings)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    fleet: FleetSettings = field(default_factory=FleetSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    edge: EdgeSettings = field(default_factory=EdgeSettings)

    @classmethod
    def from_mapping(cls, data: Any, where: str = CONFIG_NAME) -> Settings:
        return parse_section(cls, data, where)


def default_document() -> dict[str, Any]:
    """The defaults as a YAML-ready mapping (what ``facefleet init`` writes)."""
    return to_mapping(Settings())


def to_mapping(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, dict):
        return {k: to_mapping(v) for k, v in obj.items()}
    return obj


# -- validation -------------------------------------------------------------------------------
S = TypeVar("S")


def parse_section(cls: type[S], data: Any, where: str = CONFIG_NAME, prefix: str = "") -> S:
    """Validate the mapping ``data`` into the section dataclass ``cls``."""
    label = prefix.rstrip(".") or "the top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {label} must be a mapping of keys, got {data!r}")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) in {label}: {', '.join(unknown)} (known: {', '.join(known)})"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        values[name] = _convert(value, hints[name], known[name].metadata, where, f"{prefix}{name}")
    return cls(**values)


def _convert(value: Any, tp: Any, meta: Any, where: str, key: str) -> Any:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (tp,) = [a for a in args if a is not type(None)]
        args = typing.get_args(tp)
    if is_dataclass(tp):
        return parse_section(tp, value, where, f"{key}.")
    if typing.get_origin(tp) is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a mapping of keys, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: {key} must be a finite number, got {value!r}")
        value = float(value)
    elif tp is str and not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and value < lo or hi is not None and value > hi:
        span = f">= {lo:g}" if hi is None else f"<= {hi:g}" if lo is None else f"in [{lo:g}, {hi:g}]"
        raise ConfigError(f"{where}: {key} must be {span}, got {value!r}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        shown = ", ".join(c for c in choices if c)
        raise ConfigError(f"{where}: {key} must be one of {shown}, got {value!r}")
    pattern = meta.get("pattern")
    if pattern is not None and not re.fullmatch(pattern, value):
        raise ConfigError(f"{where}: {key} must be {meta.get('rule') or pattern}; got {value!r}")
    return value


# -- files ------------------------------------------------------------------------------------
def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with a one-line error for a missing, unreadable or malformed file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a YAML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data

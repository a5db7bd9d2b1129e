"""The workspace: one folder holding the config, the store, photos, models, keys and runs.

Found from an explicit path, ``FACEFLEET_HOME``, or the current folder (and its parents).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from facefleet.errors import ConfigError, NoWorkspaceError
from facefleet.fileio import atomic_write_text

CONFIG_NAME = "facefleet.yaml"

DEFAULT_CONFIG: dict[str, Any] = {
    "vision": {
        "detector": "hog",  # hog | cnn | haar
        "upsample": 1,  # HOG/CNN upsampling for photos (0 is faster, misses small faces)
        "max_side": 1024,  # detect on a copy no larger than this, map boxes back
        "fallback_detector": "cnn",  # tried when the fast detector finds nothing in a photo
        "embedder": "auto",  # auto | dlib | onnx
        "workers": 0,  # processes for batch work; 0 = one per core
    },
    "quality": {
        "min_face_px": 30,  # shorter side of the face box, in pixels
        "min_sharpness": 15.0,  # variance of the Laplacian on the aligned chip
        "min_frontalness": 0.0,
        "min_brightness": 20.0,
        "max_brightness": 240.0,
    },
    "identify": {"distance_threshold": 0.6},
    "train": {},
    "mlflow": {"tracking_uri": None, "experiment": "facefleet"},
    # tcp://HOST:8786 sends enroll/collect/train's heavy work to a Dask cluster (docs/scaling.md)
    "compute": {"scheduler": None},
    "registry": {"model_name": "face_model"},
}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error for a missing or malformed file."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


@dataclass
class Workspace:
    """Paths and configuration of one facefleet workspace."""

    root: Path
    config: dict[str, Any]

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def store_path(self) -> Path:
        return self.root / "facefleet.db"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def few_shot_dir(self) -> Path:
        return self.root / "few_shot_examples"

    @property
    def unknown_dir(self) -> Path:
        return self.few_shot_dir / "unknown"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def tracking_uri(self) -> str:
        uri = self.config.get("mlflow", {}).get("tracking_uri")
        if isinstance(uri, str) and uri.startswith("postgresql://"):
            # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the server extra brings psycopg2
            uri = "postgresql+psycopg2://" + uri[len("postgresql://") :]
        return uri or f"sqlite:///{(self.root / 'mlflow.db').resolve()}"

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.config.get(name) or {})

    # -- creation and discovery -------------------------------------------------------
    @classmethod
    def init(cls, root: Path | str, config: dict[str, Any] | None = None) -> Workspace:
        """Create (or complete) a workspace at ``root``; existing files are kept."""
        root = Path(root).expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        cfg_path = root / CONFIG_NAME
        if not cfg_path.exists():
            merged = _merge(DEFAULT_CONFIG, config or {})
            atomic_write_text(cfg_path, yaml.safe_dump(merged, sort_keys=False))
        ws = cls.open(root)
        for folder in (
            ws.images_dir,
            ws.unknown_dir,
            ws.models_dir,
            ws.keys_dir,
            ws.artifacts_dir,
            ws.output_dir,
            ws.cache_dir,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        from facefleet.store import Store

        Store(ws.store_path).close()
        return ws

    @classmethod
    def open(cls, root: Path | str) -> Workspace:
        root = Path(root).expanduser().resolve()
        cfg_path = root / CONFIG_NAME
        if not cfg_path.is_file():
            raise NoWorkspaceError(
                f"{root} is not a facefleet workspace (no {CONFIG_NAME}); "
                "create one with 'facefleet init DIR'"
            )
        return cls(root=root, config=_merge(DEFAULT_CONFIG, load_yaml(cfg_path)))

    @classmethod
    def find(cls, explicit: Path | str | None = None) -> Workspace:
        """The workspace from ``explicit``, ``$FACEFLEET_HOME``, or the current folder upwards."""
        if explicit:
            return cls.open(explicit)
        env = os.environ.get("FACEFLEET_HOME")
        if env:
            return cls.open(env)
        here = Path.cwd().resolve()
        for folder in (here, *here.parents):
            if (folder / CONFIG_NAME).is_file():
                return cls.open(folder)
        raise NoWorkspaceError(
            "no facefleet workspace here: pass --workspace DIR, set FACEFLEET_HOME, "
            "or create one with 'facefleet init DIR'"
        )

    # -- services -----------------------------------------------------------------------
    def open_store(self):  # -> facefleet.store.Store (import kept lazy for the edge)
        from facefleet.store import Store

        return Store(self.store_path)

    def engine(self):  # -> facefleet.vision.engine.FaceEngine
        from facefleet.vision.engine import FaceEngine, VisionConfig

        return FaceEngine(VisionConfig.from_workspace(self))

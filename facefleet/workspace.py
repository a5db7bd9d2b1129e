"""The workspace: one folder holding the config, the store, photos, models, keys and runs.

Found from an explicit path, ``FACEFLEET_HOME``, or the current folder (and its parents).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from facefleet.errors import NoWorkspaceError
from facefleet.fileio import atomic_write_text
from facefleet.settings import (
    CONFIG_NAME,
    PUBLIC_KEY_NAME,
    Settings,
    default_document,
    load_yaml,
)

if TYPE_CHECKING:
    from facefleet.store import Store
    from facefleet.vision.engine import FaceEngine, VisionConfig

__all__ = ["CONFIG_NAME", "DEFAULT_CONFIG", "Workspace", "load_yaml"]

DEFAULT_CONFIG: dict[str, Any] = default_document()


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class Workspace:
    """Paths and configuration of one facefleet workspace.

    ``config`` is the raw mapping read from ``facefleet.yaml``; ``settings`` is the same,
    validated into typed sections (on first use; ``open`` validates at once).
    """

    root: Path
    config: dict[str, Any]
    _settings: Settings | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_mapping(self.config, str(self.root / CONFIG_NAME))
        return self._settings

    @property
    def model_name(self) -> str:
        """The registry model name (``registry.model_name``)."""
        return self.settings.registry.model_name

    @property
    def public_key_path(self) -> Path:
        """The bundle-signing public key devices verify with."""
        return self.keys_dir / PUBLIC_KEY_NAME

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
        uri = self.settings.mlflow.tracking_uri
        return uri or f"sqlite:///{(self.root / 'mlflow.db').resolve()}"

    @property
    def configured_tracking_uri(self) -> str | None:
        """``mlflow.tracking_uri`` as written in the config (None: the workspace's SQLite)."""
        return self.settings.mlflow.tracking_uri

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
        ws = cls(root=root, config=_merge(DEFAULT_CONFIG, load_yaml(cfg_path)))
        ws.settings  # noqa: B018 - validate now: a bad value is reported before any work starts
        return ws

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
    def open_store(self) -> Store:  # import kept lazy for the edge
        from facefleet.store import Store

        return Store(self.store_path)

    def vision_config(self) -> VisionConfig:
        """The face engine's configuration from the ``vision:`` section."""
        from facefleet.vision.engine import VisionConfig

        return VisionConfig.from_settings(self.settings.vision, cache_dir=self.cache_dir)

    def engine(self) -> FaceEngine:
        from facefleet.vision.engine import FaceEngine

        return FaceEngine(self.vision_config())

"""Version YAML (``gamma4.yaml``): the sections ``inputs``, ``outputs``, ``parameters`` that
fix every setting of one training run; validated into a ``TrainConfig``.

Unknown keys and bad values are ``ConfigError``s naming the file and the key, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from facefleet.errors import ConfigError
from facefleet.settings import check_model_name, load_yaml
from facefleet.train.classifier import SearchSpace
from facefleet.train.thresholds import OpenSetParams

STATUSES = ("candidate", "selected", "in_use", "revoked")
METHODS = ("auto", "svm", "centroid", "nearest")
KERNELS = ("rbf", "linear")
MAX_JOBS = 64  # worker processes of one grid search; more only thrashes a training server


@dataclass
class TrainConfig:
    name: str | None = None  # human name of the version, e.g. "gamma4"
    model_name: str | None = None  # registry name; None = workspace registry.model_name
    statuses: tuple[str, ...] = ("in_use",)
    use_negatives: bool = True
    use_strangers: bool = True
    search: SearchSpace = field(default_factory=SearchSpace)
    open_set: OpenSetParams = field(default_factory=OpenSetParams)
    source: str | None = None  # the YAML text the config came from (logged as an artifact)

    def params(self) -> dict[str, Any]:
        """Flat parameters for MLflow."""
        s, o = asdict(self.search), asdict(self.open_set)
        out: dict[str, Any] = {
            "statuses": ",".join(self.statuses),
            "use_negatives": self.use_negatives,
            "use_strangers": self.use_strangers,
        }
        for k, v in s.items():
            out[k] = ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else v
        out.update(o)
        return out

    def to_yaml(self) -> str:
        """The effective configuration in the version-YAML layout."""
        s = asdict(self.search)
        doc = {
            "inputs": {
                "statuses": list(self.statuses),
                "negatives": self.use_negatives,
                "strangers": self.use_strangers,
            },
            "outputs": {"name": self.name, "model_name": self.model_name},
            "parameters": {
                "method": s.pop("method"),
                **{k: list(v) if isinstance(v, tuple) else v for k, v in s.items()},
                "open_set": asdict(self.open_set),
            },
        }
        return yaml.safe_dump(doc, sort_keys=False)


_INPUT_KEYS = {"statuses", "negatives", "strangers"}
_OUTPUT_KEYS = {"name", "model_name"}
_PARAM_KEYS = {
    "method",
    "kernels",
    "C",
    "gamma",
    "class_weight",
    "cv_folds",
    "search",
    "n_jobs",
    "seed",
    "open_set",
}
_OPEN_KEYS = {"target_far", "margin", "far_distance", "max_threshold"}
# keys of the former per-person rule, with what replaced them
_OPEN_REMOVED = {
    "target_frr": "the thresholds now follow from target_far, the share of strangers named",
    "min_threshold": "thresholds now apply to the open-set score, not to a distance",
}


def _section(doc: dict[str, Any], name: str, allowed: set[str], where: str) -> dict[str, Any]:
    sec = doc.get(name) or {}
    if not isinstance(sec, dict):
        raise ConfigError(f"{where}: '{name}' must be a mapping")
    unknown = sorted(set(sec) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) in '{name}': {', '.join(unknown)} (known: {', '.join(sorted(allowed))})"
        )
    return sec


def _num_list(value: Any, key: str, where: str, positive: bool = True) -> tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: '{key}' must be a number or a non-empty list of numbers")
    out = []
    for v in value:
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or not math.isfinite(v)
            or (positive and v <= 0)
        ):
            raise ConfigError(f"{where}: '{key}' values must be finite positive numbers, got {v!r}")
        out.append(float(v))
    return tuple(out)


def _int(value: Any, key: str, where: str, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi and value > hi):
        span = f">= {lo}" if hi is None else f"from {lo} to {hi}"
        raise ConfigError(f"{where}: '{key}' must be an integer {span}, got {value!r}")
    return value


def _rate(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{where}: '{key}' must be a number in [0, 1), got {value!r}")
    return float(value)


def _fraction(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"{where}: '{key}' must be a number in [0, 1], got {value!r}")
    return float(value)


def _dist(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 4:
        raise ConfigError(f"{where}: '{key}' must be a distance in (0, 4], got {value!r}")
    return float(value)


def _bool(value: Any, key: str, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: '{key}' must be true or false, got {value!r}")
    return value


def _choices(value: Any, allowed: Any, error: str) -> tuple[str, ...]:
    """A name or a non-empty list of names, each one of ``allowed``; ``error`` otherwise."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or any(n not in allowed for n in names):
        raise ConfigError(error)
    return tuple(names)


def config_from_dict(
    doc: dict[str, Any], where: str = "config", defaults: TrainConfig | None = None
) -> TrainConfig:
    """Validate a version document (already parsed) over ``defaults``."""
    cfg = defaults or TrainConfig()
    unknown = sorted(set(doc) - {"inputs", "outputs", "parameters", "description"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown section(s) {', '.join(unknown)} (expected inputs, outputs, parameters)"
        )
    inp = _section(doc, "inputs", _INPUT_KEYS, where)
    out = _section(doc, "outputs", _OUTPUT_KEYS, where)
    par = _section(doc, "parameters", _PARAM_KEYS, where)
    osec = par.get("open_set") or {}
    if not isinstance(osec, dict):
        raise ConfigError(f"{where}: 'parameters.open_set' must be a mapping")
    for key in sorted(set(osec) & set(_OPEN_REMOVED)):
        raise ConfigError(f"{where}: 'parameters.open_set.{key}' is no longer used: {_OPEN_REMOVED[key]}")
    bad = sorted(set(osec) - _OPEN_KEYS)
    if bad:
        raise ConfigError(f"{where}: unknown key(s) in 'parameters.open_set': {', '.join(bad)}")

    statuses = cfg.statuses
    if "statuses" in inp:
        statuses = _choices(
            inp["statuses"], STATUSES, f"{where}: 'inputs.statuses' must list some of {', '.join(STATUSES)}"
        )
    name = out.get("name", cfg.name)
    model_name = out.get("model_name", cfg.model_name)
    if name is not None and (not isinstance(name, str) or not name.strip() or "/" in name):
        raise ConfigError(f"{where}: 'outputs.name' must be a plain name, got {name!r}")
    if model_name is not None:
        check_model_name(model_name, where, "'outputs.model_name'")

    s = cfg.search
    kernels = s.kernels
    if "kernels" in par:
        kernels = _choices(
            par["kernels"], KERNELS, f"{where}: 'parameters.kernels' must list rbf and/or linear"
        )
    method = par.get("method", s.method)
    if method not in METHODS:
        raise ConfigError(f"{where}: 'parameters.method' must be one of {', '.join(METHODS)}")
    search = par.get("search", s.search)
    if search not in ("halving", "grid"):
        raise ConfigError(f"{where}: 'parameters.search' must be halving or grid")
    if par.get("class_weight", "balanced") != "balanced":
        raise ConfigError(f"{where}: 'parameters.class_weight' supports only 'balanced'")
    space = replace(
        s,
        kernels=kernels,
        C=_num_list(par["C"], "parameters.C", where) if "C" in par else s.C,
        gamma=_num_list(par["gamma"], "parameters.gamma", where) if "gamma" in par else s.gamma,
        cv_folds=_int(par.get("cv_folds", s.cv_folds), "parameters.cv_folds", where, 2),
        search=search,
        n_jobs=_int(
            par.get("n_jobs", s.n_jobs),
            "parameters.n_jobs",
            where,
            1,
            MAX_JOBS,
        ),
        seed=_int(par.get("seed", s.seed), "parameters.seed", where, 0),
        method=method,
    )
    o = cfg.open_set
    open_set = OpenSetParams(
        target_far=_rate(osec.get("target_far", o.target_far), "open_set.target_far", where),
        margin=_fraction(osec.get("margin", o.margin), "open_set.margin", where),
        far_distance=_dist(osec.get("far_distance", o.far_distance), "open_set.far_distance", where),
        max_threshold=_dist(osec.get("max_threshold", o.max_threshold), "open_set.max_threshold", where),
    )
    return replace(
        cfg,
        name=name,
        model_name=model_name,
        statuses=statuses,
        use_negatives=_bool(inp.get("negatives", cfg.use_negatives), "inputs.negatives", where),
        use_strangers=_bool(inp.get("strangers", cfg.use_strangers), "inputs.strangers", where),
        search=space,
        open_set=open_set,
    )


def load_config(
    path: Path | None = None, *, workspace_train: dict[str, Any] | None = None, **overrides: Any
) -> TrainConfig:
    """The run's configuration: workspace ``train:`` section, then the version YAML at
    ``path``, then non-None ``overrides`` (name, model_name, method, cv_folds, target_far,
    max_threshold, n_jobs)."""
    cfg = TrainConfig()
    if workspace_train:
        cfg = config_from_dict(workspace_train, "facefleet.yaml train", cfg)
    source = None
    if path is not None:
        path = Path(path)
        doc = load_yaml(path)
        source = path.read_text(encoding="utf-8")
        cfg = config_from_dict(doc, str(path), cfg)
        if cfg.name is None:
            cfg = replace(cfg, name=path.stem)
    flag_doc: dict[str, Any] = {"outputs": {}, "parameters": {"open_set": {}}}
    for key in ("name", "model_name"):
        if overrides.get(key) is not None:
            flag_doc["outputs"][key] = overrides[key]
    for key in ("method", "cv_folds", "n_jobs", "search"):
        if overrides.get(key) is not None:
            flag_doc["parameters"][key] = overrides[key]
    for key in ("target_far", "max_threshold"):
        if overrides.get(key) is not None:
            flag_doc["parameters"]["open_set"][key] = overrides[key]
    cfg = config_from_dict(flag_doc, "command-line options", cfg)
    return replace(cfg, source=source if source is not None else cfg.to_yaml())

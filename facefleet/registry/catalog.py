"""The version catalog: which bundle a model reference names, and where its files are.

A reference is ``None`` (the newest version), a number (``3``, ``"3"``, ``"v3"``), an alias
(``"@production"``) or a human name (``"gamma4"``). :func:`resolve` answers it from two
catalogs behind one interface (:class:`Catalog`):

- :class:`FolderCatalog`: a plain models folder (bundle folders and ``.tar.gz`` archives
  found by their manifests, aliases in ``aliases.json``: ``{"face_model": {"production": 3}}``),
  for devices and workspaces without MLflow;
- :class:`MlflowCatalog`: the MLflow model registry (versions, aliases, ``name`` tags), whose
  bundles are downloaded from the training run's artifacts when not held locally.

Numbers, names and the newest version are looked up in the folder first, then in MLflow;
aliases in MLflow first (the folder's ``aliases.json`` is the fallback when the registry is
absent or unreachable). Importing this module does not import mlflow.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from facefleet.errors import BundleError, FacefleetError, ModelError
from facefleet.registry.format import MANIFEST, SIGNATURE, read_manifest

if TYPE_CHECKING:  # pragma: no cover
    from facefleet.workspace import Workspace

log = logging.getLogger(__name__)

ALIASES_FILE = "aliases.json"
DEFAULT_MODEL = "face_model"
MAX_SCAN = 10_000  # files examined when scanning a models folder
BUNDLE_TAG = "facefleet.bundle"  # on an MLflow model version: "pending" until its bundle is complete
PENDING, COMPLETE = "pending", "complete"


def _complete(mv: Any) -> bool:
    """False for a version a killed training run left registered without its bundle."""
    return (mv.tags or {}).get(BUNDLE_TAG) != PENDING


class VersionError(ModelError):
    """A model version reference or alias move that cannot be honoured."""


@dataclass(frozen=True)
class BundleRef:
    """A bundle on disk: where it is and what its manifest says."""

    path: Path
    model: str
    version: int
    name: str


@dataclass(frozen=True)
class ResolvedVersion:
    """What a reference resolved to; ``reason`` says how, for people (logs, CLI, console)."""

    model: str
    version: int
    name: str
    path: Path
    reason: str


# -- references -----------------------------------------------------------------------------


def parse_ref(ref: str | int | None) -> tuple[str, Any]:
    """``("newest", None)``, ``("version", 3)``, ``("alias", "production")`` or ``("name", s)``."""
    if ref is None:
        return ("newest", None)
    if isinstance(ref, int) and not isinstance(ref, bool):
        return ("version", ref)
    text = str(ref).strip()
    if not text:
        raise VersionError("empty model version reference")
    if text.startswith("@"):
        if not text[1:]:
            raise VersionError("empty alias in reference '@'")
        return ("alias", text[1:])
    digits = text[1:] if text[:1] in ("v", "V") and text[1:].isdigit() else text
    if digits.isdigit():
        return ("version", int(digits))
    return ("name", text)


def model_name(ws: Workspace) -> str:
    """The registered model name of the workspace (``registry.model_name``)."""
    return ws.model_name


# -- the interface --------------------------------------------------------------------------


class Catalog(Protocol):
    """Where the versions of one model are listed and their bundles kept."""

    model: str
    where: str  # for messages: "models folder /x/models", "MLflow registry"

    def versions(self) -> list[int]:
        """Every version, ascending."""
        ...

    def alias(self, alias: str) -> int | None:
        """The version holding ``alias``, or None."""
        ...

    def named(self, name: str) -> list[int]:
        """The versions with that human name, ascending."""
        ...

    def bundle(self, version: int) -> Path | None:
        """The local bundle (folder or archive) of ``version``, or None when not held."""
        ...


def scan_bundles(root: Path) -> dict[tuple[str, int], BundleRef]:
    """Every bundle (folder with manifest.json + manifest.sig, or .tar.gz) under ``root``.

    A folder wins over an archive of the same version; hidden entries are skipped.
    """
    found: dict[tuple[str, int], BundleRef] = {}
    root = Path(root)
    if not root.is_dir():
        return found
    seen = 0
    for path in sorted(root.rglob("*")):
        seen += 1
        if seen > MAX_SCAN:
            log.warning("stopped scanning %s after %d entries", root, MAX_SCAN)
            break
        if any(part.startswith(".") for part in path.relative_to(root).parts) or path.is_symlink():
            continue
        is_dir = path.is_dir() and (path / SIGNATURE).is_file()
        is_tar = path.is_file() and path.name.endswith((".tar.gz", ".tgz"))
        if not (is_dir or is_tar):
            continue
        try:
            manifest = read_manifest(path, need_files=False)
        except BundleError:
            continue
        key = (manifest["model"], int(manifest["version"]))
        if key in found and not is_dir:
            continue
        found[key] = BundleRef(path, key[0], key[1], str(manifest.get("name", "")))
    return found


class FolderCatalog:
    """A plain models folder: the bundles in it and its ``aliases.json``."""

    def __init__(self, models_dir: Path, model: str) -> None:
        self.models_dir = Path(models_dir)
        self.model = model
        self.where = f"models folder {self.models_dir}"
        self._scan: dict[int, BundleRef] | None = None

    def _bundles(self) -> dict[int, BundleRef]:
        if self._scan is None:
            self._scan = {v: b for (m, v), b in scan_bundles(self.models_dir).items() if m == self.model}
            # a version folder holding a manifest (the trainer's own output, maybe unsigned yet)
            folder = self.models_dir / self.model
            if folder.is_dir():
                for p in folder.iterdir():
                    if p.name.isdigit() and p.is_dir() and (p / MANIFEST).is_file():
                        self._scan.setdefault(int(p.name), BundleRef(p, self.model, int(p.name), ""))
        return self._scan

    def versions(self) -> list[int]:
        return sorted(self._bundles())

    def aliases(self) -> dict[str, int]:
        """This model's aliases in ``aliases.json`` (empty when the file is absent)."""
        path = self.models_dir / ALIASES_FILE
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise FacefleetError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise FacefleetError(f"{path}: expected {{model: {{alias: version}}}}")
        return {str(a): int(v) for a, v in (data.get(self.model) or {}).items()}

    def alias(self, alias: str) -> int | None:
        return self.aliases().get(alias)

    def named(self, name: str) -> list[int]:
        out = []
        for v, b in sorted(self._bundles().items()):
            label = b.name
            if not label:
                try:
                    label = str(read_manifest(b.path, need_files=False).get("name", ""))
                except BundleError:
                    label = ""
            if label == name:
                out.append(v)
        return out

    def bundle(self, version: int) -> Path | None:
        found = self._bundles().get(int(version))
        return None if found is None else found.path


class MlflowCatalog:
    """The MLflow model registry of a workspace; bundles come from the runs' artifacts."""

    def __init__(self, ws: Workspace, model: str, client: Any = None) -> None:
        self.ws = ws
        self.model = model
        self.where = "MLflow registry"
        self._client = client

    @property
    def client(self) -> Any:
        """The MLflow client, made on first use (importing mlflow takes seconds)."""
        if self._client is None:
            from facefleet.registry.tracking import configure

            self._client = configure(ws=self.ws)
        return self._client

    def _all(self) -> list[Any]:
        out: list[Any] = []
        token = None
        for _ in range(10_000):  # bounded paging
            page = self.client.search_model_versions(f"name='{self.model}'", page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                break
        return out

    def versions(self) -> list[int]:
        return sorted(int(mv.version) for mv in self._all() if _complete(mv))

    def alias(self, alias: str) -> int | None:
        from mlflow.exceptions import MlflowException

        try:
            return int(self.client.get_model_version_by_alias(self.model, alias).version)
        except MlflowException:
            return None

    def named(self, name: str) -> list[int]:
        return sorted(
            int(mv.version) for mv in self._all() if (mv.tags or {}).get("name") == name and _complete(mv)
        )

    def has(self, version: int) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_model_version(self.model, str(version))
        except MlflowException:
            return False
        return True

    def bundle(self, version: int) -> Path | None:
        """The bundle folder of ``version`` in the workspace, downloaded from its run's
        artifacts when this machine does not hold it yet (None when MLflow has no such version)."""
        from mlflow.exceptions import MlflowException

        dest = Path(self.ws.models_dir) / self.model / str(version)
        if (dest / MANIFEST).is_file():
            return dest
        try:
            mv = self.client.get_model_version(self.model, str(version))
        except MlflowException:
            return None
        if not _complete(mv):
            raise ModelError(f"{self.model} v{version} is incomplete (its training did not finish)")
        if not mv.run_id:
            raise ModelError(f"model {self.model} version {version} has no training run to fetch from")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=dest.parent))
        try:
            got = Path(self.client.download_artifacts(mv.run_id, "bundle", str(tmp)))
            if not (got / MANIFEST).is_file():
                raise ModelError(f"model {self.model} version {version}: its run holds no bundle")
            if not dest.exists():  # else another process fetched it meanwhile
                os.replace(got, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest


def catalogs(ws: Workspace, model: str | None = None) -> list[Catalog]:
    """The workspace's catalogs: its models folder, then MLflow when it has a tracking store."""
    model = model or model_name(ws)
    out: list[Catalog] = [FolderCatalog(ws.models_dir, model)]
    from facefleet.registry.tracking import has_tracking_store

    if has_tracking_store(ws):
        out.append(MlflowCatalog(ws, model))
    return out


# -- resolving ------------------------------------------------------------------------------


def resolve_in(cat: Catalog, ref: str | int | None) -> tuple[int, str]:
    """The version ``ref`` names in one catalog, and why; :class:`VersionError` when none."""
    kind, value = parse_ref(ref)
    model = cat.model
    if kind == "alias":
        version = cat.alias(value)
        if version is None:
            raise VersionError(f"no version of {model!r} holds @{value}")
        return version, f"@{value} -> v{version} ({cat.where})"
    if kind == "version":
        if not _has(cat, value):
            raise VersionError(f"{model!r} has no version {value} (no v{value} in the {cat.where})")
        return int(value), f"v{value} ({cat.where})"
    if kind == "name":
        named = cat.named(value)
        if not named:
            raise VersionError(f"{model!r} has no version named {value!r}")
        # retraining under the same name: the newest version wins
        return max(named), f"{value!r} -> v{max(named)}, the newest of that name ({cat.where})"
    found = cat.versions()
    if not found:
        raise VersionError(f"no trained model {model!r} yet: run 'facefleet train'")
    return max(found), f"newest version v{max(found)} ({cat.where})"


def resolve(
    ws: Workspace, ref: str | int | None = None, *, model: str | None = None, fetch: bool = True
) -> ResolvedVersion:
    """The version ``ref`` names and its local bundle (downloaded from MLflow when needed and
    ``fetch``). Raises :class:`VersionError` (a :class:`ModelError`) when no version matches,
    :class:`BundleError` when it matches but no bundle is held (and not ``fetch``)."""
    model = model or model_name(ws)
    cats = catalogs(ws, model)
    if parse_ref(ref)[0] == "alias":  # the registry is the authority; aliases.json its fallback
        cats.sort(key=lambda c: not isinstance(c, MlflowCatalog))
    first_error: VersionError | None = None
    for cat in cats:
        try:
            version, reason = resolve_in(cat, ref)
            break
        except VersionError as exc:
            first_error = first_error or exc
        except ImportError as exc:  # a device or workspace without the server extras
            log.info("%s not usable here (%s)", cat.where, exc)
        except FacefleetError:
            raise
        except Exception as exc:  # noqa: BLE001 - an unreachable tracking server is not fatal
            log.warning("%s unreachable (%s); trying the next catalog", cat.where, exc)
    else:
        raise first_error or VersionError(f"cannot resolve {ref!r} to a version of {model!r}")
    path = _bundle_path(cats, version, fetch)
    if path is None:
        raise BundleError(f"no bundle for {model} v{version} under {ws.models_dir}")
    try:
        name = str(read_manifest(path, need_files=False).get("name", ""))
    except BundleError:
        name = ""
    return ResolvedVersion(model, version, name, path, reason)


def _has(cat: Catalog, version: int) -> bool:
    if isinstance(cat, MlflowCatalog):
        return cat.has(version)
    return cat.bundle(version) is not None


def _bundle_path(cats: list[Catalog], version: int, fetch: bool) -> Path | None:
    for cat in cats:
        if isinstance(cat, MlflowCatalog) and not fetch:
            continue
        path = cat.bundle(version)
        if path is not None:
            return path
    return None


def bundle_path(ws: Workspace, ref: str | int | None = None, *, model: str | None = None) -> Path:
    """The local bundle ``ref`` names (downloaded from MLflow when needed)."""
    return resolve(ws, ref, model=model).path

"""The training report: the packaged template notebook executed with papermill for one run.

Owns running ``report_template.ipynb`` (metrics and params of an MLflow run as tables and a
plot), the parameters injected into it, and logging the executed notebook to the run.
papermill is optional (``pip install 'facefleet[report]'``).
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facefleet.errors import FacefleetError

if TYPE_CHECKING:  # pragma: no cover
    from facefleet.workspace import Workspace

TEMPLATE = Path(__file__).with_name("report_template.ipynb")
KERNEL = "python3"


class ReportError(FacefleetError):
    """The report notebook could not be made."""


def plain(value: Any) -> Any:
    """``value`` reduced to what papermill can write into a notebook cell (JSON-like)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if isinstance(value, (datetime, date, Path)):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:  # numpy scalars
        return value.item()
    except AttributeError:
        return str(value)


def notebook_parameters(ws: Workspace, run_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """What the template's ``parameters`` cell receives."""
    return {"run_id": run_id, "tracking_uri": ws.tracking_uri, "params": plain(params or {})}


def _papermill():
    try:
        import papermill
    except ImportError as exc:
        raise ReportError(
            f"the report needs papermill and ipykernel (pip install 'facefleet[report]'): {exc}"
        ) from None
    return papermill


def _ipc_kernel_manager(folder: Path) -> type:
    """A kernel manager talking to the kernel over Unix sockets in ``folder`` (owner-only):
    nothing on TCP for other local users to read, and no "running over TCP without
    encryption" warning on the user's terminal."""
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(transport="ipc", ip=str(folder / "kernel"), **kwargs)

    return IPCKernelManager


def run_report(
    ws: Workspace,
    run_id: str,
    params: dict[str, Any],
    *,
    output: Path | str | None = None,
    timeout: int = 600,
) -> Path:
    """Execute the report notebook for ``run_id``; log it to the run; return its path.

    ``params`` is the version YAML the run was trained from. The notebook is written to
    ``output`` (default ``<workspace>/output/report-<run_id>.ipynb``) through a temporary
    file, and logged to the run under ``report/``.
    """
    papermill = _papermill()
    from mlflow.exceptions import MlflowException

    from facefleet.registry.tracking import configure

    client = configure(ws)
    try:
        client.get_run(run_id)
    except MlflowException:
        raise ReportError(f"no MLflow run {run_id!r} in {ws.tracking_uri}") from None
    out = Path(output) if output else ws.output_dir / f"report-{run_id}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}.ipynb")
    env_before = os.environ.get("MLFLOW_DISABLE_TELEMETRY")
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # inherited by the kernel
    try:
        with tempfile.TemporaryDirectory(prefix="facefleet-kernel-") as sockets:
            papermill.execute_notebook(
                str(TEMPLATE),
                str(tmp),
                parameters=notebook_parameters(ws, run_id, params),
                kernel_name=KERNEL,
                progress_bar=False,
                execution_timeout=timeout,
                cwd=str(ws.root),
                kernel_manager_class=_ipc_kernel_manager(Path(sockets)),
            )
        os.replace(tmp, out)
    except papermill.PapermillExecutionError as exc:
        raise ReportError(
            f"report notebook failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue} "
            f"(partial notebook: {tmp})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - kernel start-up problems have many types
        tmp.unlink(missing_ok=True)
        raise ReportError(f"report notebook could not run ({type(exc).__name__}: {exc})") from None
    finally:
        if env_before is None:
            os.environ.pop("MLFLOW_DISABLE_TELEMETRY", None)
    client.log_artifact(run_id, str(out), artifact_path="report")
    return out


def executed_python(notebook: Path) -> str | None:
    """The interpreter the report's kernel ran on (read from the executed notebook)."""
    data = json.loads(Path(notebook).read_text(encoding="utf-8"))
    for cell in data.get("cells", []):
        for output in cell.get("outputs", []):
            text = "".join(output.get("text", []))
            if text.startswith("run ") and " on " in text:
                return text.rsplit(" on ", 1)[1].strip()
    return None

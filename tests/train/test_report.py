"""The report notebook executed for real with papermill on a run in a real MLflow store."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

from facefleet.registry import tracking
from facefleet.train import report
from facefleet.train.lookalikes import ARTIFACT, LookAlike
from facefleet.workspace import Workspace


@pytest.fixture(scope="module")
def ws_run(tmp_path_factory) -> tuple[Workspace, str]:
    import mlflow

    ws = Workspace.init(tmp_path_factory.mktemp("report"))
    with tracking.start_run(ws, "train-gamma4", tags={"name": "gamma4"}) as run:
        mlflow.log_params({"method": "svm", "C": 10})
        mlflow.log_metrics({"accuracy": 0.9831, "stranger_reject": 0.875, "train_seconds": 4.2})
        for step, loss in enumerate([0.9, 0.5, 0.3]):
            mlflow.log_metric("cv_error", loss, step=step)
    return ws, run.info.run_id


def test_template_has_a_parameters_cell():
    nb = nbformat.read(report.TEMPLATE, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "run_id" in tagged[0].source


def test_plain_makes_yaml_values_injectable():
    import datetime as dt

    import numpy as np

    assert report.plain({"a": (1, np.float32(0.5)), 2: dt.date(2024, 1, 2), "p": Path("/x")}) == {
        "a": [1, 0.5],
        "2": "2024-01-02",
        "p": "/x",
    }


def test_report_runs_the_notebook_and_logs_it(ws_run):
    ws, run_id = ws_run
    version_yaml = {"name": "gamma4", "method": "svm", "grid": {"C": [1, 10]}, "people": ["ann"]}
    out = report.run_report(ws, run_id, version_yaml)
    assert out == ws.output_dir / f"report-{run_id}.ipynb" and out.is_file()
    assert report.executed_python(out) == sys.executable  # the venv's python ran the kernel

    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and '"grid": {"C": [1, 10]}' in injected[0].source
    html = "".join(o.get("data", {}).get("text/html", "") for c in nb.cells for o in c.get("outputs", []))
    assert "0.9831" in html and "stranger_reject" in html and "[1, 10]" in html
    pngs = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(pngs) == 1
    summary = nb.cells[-1].outputs[-1]["data"]["text/plain"]
    assert "'n_metrics': 4" in summary and "'cv_error'" in summary

    client = tracking.configure(ws)
    logged = [a.path for a in client.list_artifacts(run_id, "report")]
    assert logged == [f"report/report-{run_id}.ipynb"]


def test_unknown_run_is_a_clear_error(ws_run):
    ws, _ = ws_run
    with pytest.raises(report.ReportError, match="no MLflow run 'nope'"):
        report.run_report(ws, "nope", {})


def test_report_shows_the_stranger_estimate_and_its_plot(tmp_path_factory):
    import mlflow

    from facefleet.train.plots import strangers_missed_png

    ws = Workspace.init(tmp_path_factory.mktemp("report-far"))
    metrics = {"far": 0.0115, "far_low": 0.007, "far_high": 0.0189, "far_trials": 1303.0}
    metrics.update(target_far=0.01, frr=0.108)
    png = tmp_path_factory.mktemp("png") / "strangers_vs_missed_train.png"
    png.write_bytes(strangers_missed_png([0.5, 0.2, 0.1], [0.0, 0.01, 0.05], (0.108, 0.0115)))
    pair = LookAlike("orl_s1", "orl_s1_again", 6, 7, -0.034, 0.30, 12, 283, both_ways=True)
    with tracking.start_run(ws, "train-far") as run:
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(png), "plots")
        mlflow.log_dict([pair.as_dict()], ARTIFACT)
    out = report.run_report(ws, run.info.run_id, {})
    nb = nbformat.read(out, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert (
        "strangers named (estimate): 1.15 % (95 % interval 0.70-1.89 %, 1303 trials of enrolled people "
        "played as strangers; target 1.00 %); known faces missed (leave-one-out) 10.8 %"
    ) in text
    pngs = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(pngs) == 2  # the training's curve and the metrics plot
    # the look-alikes table, as pandas shows it
    table = "".join(o.get("data", {}).get("text/plain", "") for c in nb.cells for o in c.get("outputs", []))
    assert re.search(r"orl_s1\s+orl_s1_again\s+6\s+7\s+0\.3\s+-0\.034\s+True", table), table

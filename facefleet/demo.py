"""The demo: a fresh workspace, enrol a folder-per-person training set, identify a test set,
and report accepted/rejected photos with reasons and the accuracy."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from facefleet.enrol import EnrolReport, enroll, plan_folder
from facefleet.errors import FacefleetError
from facefleet.identify import identify
from facefleet.workspace import Workspace

REPO_ROOT = Path(__file__).resolve().parents[1]


def find_sample_data(explicit: Path | str | None = None) -> Path:
    """``--data``, else ``$FACEFLEET_SAMPLE_DATA``, else ``../shared/data/faces`` beside the repo."""
    candidates = [
        explicit,
        os.environ.get("FACEFLEET_SAMPLE_DATA"),
        REPO_ROOT.parent / "shared" / "data" / "faces",
    ]
    for cand in candidates:
        if cand:
            path = Path(cand).expanduser()
            if (path / "five_celebrity" / "train").is_dir():
                return path
            if explicit and cand == explicit:
                raise FacefleetError(f"{path}: expected five_celebrity/train and five_celebrity/val inside")
    raise FacefleetError(
        "no sample data: pass --data DIR (a folder with five_celebrity/train and five_celebrity/val, "
        "one sub-folder per person) or set FACEFLEET_SAMPLE_DATA"
    )


@dataclass
class DemoReport:
    workspace: Path
    enrolment: EnrolReport
    results: list[dict] = field(default_factory=list)

    @property
    def correct(self) -> int:
        return sum(1 for r in self.results if _decision(r) == Path(r["path"]).parent.name)

    @property
    def accuracy(self) -> float:
        return self.correct / len(self.results) if self.results else 0.0

    def lines(self) -> list[str]:
        enr = self.enrolment
        out = [
            f"workspace: {self.workspace}",
            f"enrolled {len(enr.person_ids())} people: {len(enr.accepted)} photos accepted, "
            f"{len(enr.rejected)} rejected",
        ]
        out += [
            f"  rejected {Path(o.path).parent.name}/{Path(o.path).name}: {o.reason}" for o in enr.rejected
        ]
        out.append(
            f"identified {self.correct} of {len(self.results)} test photos correctly "
            f"({100 * self.accuracy:.1f} %)"
        )
        for r in self.results:
            got = _decision(r)
            if got != Path(r["path"]).parent.name:
                out.append(f"  wrong: {r['path']} -> {got}")
        return out


def _decision(result: dict) -> str | None:
    if result["error"] or not result["faces"]:
        return None
    biggest = max(result["faces"], key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
    return biggest["name"]


def run_demo(workspace: Path | str, data: Path | str | None = None) -> DemoReport:
    faces = find_sample_data(data)
    ws = Workspace.init(workspace)
    report = enroll(ws, plan_folder(faces / "five_celebrity" / "train"))
    results = identify(ws, [faces / "five_celebrity" / "val"])
    return DemoReport(workspace=ws.root, enrolment=report, results=results)

"""Validate: a candidate model version against production, on the same faces.

Two evaluation sets: a held-out folder (one sub-folder per person, plus optional strangers)
and the replay of collected faces (their stored embeddings; reviewed faces carry the truth,
unreviewed ones only show where the decision changed). Both models are scored with
``train.evaluate`` (accuracy, known false-reject, unknown false-accept, per person); the
policy in ``facefleet.yaml`` (``validate:``) decides pass or fail, and ``promote`` moves the
aliases through the audited ``registry.versions.promote``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from facefleet.errors import ConfigError, FacefleetError, ModelError
from facefleet.workspace import Workspace

log = logging.getLogger(__name__)

ACCURACY = "open_set_accuracy"
FAR = "unknown_false_accept_rate"
FRR = "known_false_reject_rate"


@dataclass
class Policy:
    """``validate:`` in facefleet.yaml. Floors apply always; comparisons when there is a
    production model."""

    min_accuracy: float = 0.9  # open-set accuracy floor
    max_false_accept: float = 0.05  # strangers accepted as someone
    max_false_reject: float = 0.25  # known faces said unknown
    accuracy_not_lower: bool = True
    false_accept_not_higher: bool = True
    min_improvement: float = 0.0  # accuracy must beat production's by at least this
    tolerance: float = 0.0  # slack in the "not lower / not higher" comparisons
    promote_production: bool = False  # a pass moves @production too (else only @validated)
    test_dir: str | None = None  # default held-out folder
    unknown_dir: str | None = None  # default stranger photos
    replay_days: float | None = 30.0  # collected faces this recent are replayed (None: all)

    @classmethod
    def from_config(cls, data: dict[str, Any] | None, where: str = "facefleet.yaml") -> Policy:
        data = dict(data or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) in 'validate': {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        out = cls()
        for key, value in data.items():
            default = getattr(out, key)
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ConfigError(f"{where}: validate.{key} must be true or false")
            elif key in ("test_dir", "unknown_dir"):
                if value is not None and not isinstance(value, str):
                    raise ConfigError(f"{where}: validate.{key} must be a folder path")
            elif value is not None or key != "replay_days":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ConfigError(f"{where}: validate.{key} must be a number >= 0, got {value!r}")
                value = float(value)
            setattr(out, key, value)
        return out


@dataclass
class Check:
    name: str
    value: float
    limit: float
    ok: bool


@dataclass
class Change:
    item: str  # face id or file
    truth: str | None  # None: not reviewed
    before: str | None
    after: str | None
    distance_before: float
    distance_after: float


@dataclass
class ValidationReport:
    candidate: dict[str, Any]
    production: dict[str, Any] | None
    results: dict[str, dict[str, Any]]  # set name -> {"candidate": EvalResult, "production": ...}
    checks: list[Check]
    passed: bool
    changes: list[Change] = field(default_factory=list)
    promoted: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "candidate": self.candidate,
            "production": self.production,
            "passed": self.passed,
            "checks": [asdict(c) for c in self.checks],
            "results": {
                k: {m: (r.to_dict() if r is not None else None) for m, r in v.items()}
                for k, v in self.results.items()
            },
            "changes": [asdict(c) for c in self.changes],
            "promoted": self.promoted,
        }


# -- pure ----------------------------------------------------------------------------------
def judge(cand: dict[str, float], base: dict[str, float] | None, policy: Policy) -> list[Check]:
    """The policy's checks on the candidate's metrics (and production's, when given)."""

    def val(m: dict[str, float], k: str) -> float:
        v = m.get(k, float("nan"))
        return float(v)

    checks: list[Check] = []
    acc, far, frr = val(cand, ACCURACY), val(cand, FAR), val(cand, FRR)
    if cand.get("known_faces", 0) <= 0:
        checks.append(Check("labelled faces to validate on", 0.0, 1.0, False))
    checks.append(
        Check(
            "accuracy >= floor", acc, policy.min_accuracy, not math.isnan(acc) and acc >= policy.min_accuracy
        )
    )
    if not math.isnan(far):
        checks.append(
            Check("false accept <= ceiling", far, policy.max_false_accept, far <= policy.max_false_accept)
        )
    if not math.isnan(frr):
        checks.append(
            Check("false reject <= ceiling", frr, policy.max_false_reject, frr <= policy.max_false_reject)
        )
    if base is not None:
        b_acc, b_far = val(base, ACCURACY), val(base, FAR)
        if policy.accuracy_not_lower and not math.isnan(b_acc):
            lim = b_acc - policy.tolerance
            checks.append(Check("accuracy not lower than production", acc, lim, acc >= lim))
        if policy.false_accept_not_higher and not math.isnan(b_far) and not math.isnan(far):
            lim = b_far + policy.tolerance
            checks.append(Check("false accept not higher than production", far, lim, far <= lim))
        if policy.min_improvement > 0 and not math.isnan(b_acc):
            lim = b_acc + policy.min_improvement
            checks.append(Check("accuracy better by the minimum", acc, lim, acc >= lim))
    return checks


def changed_decisions(items: list[str], truth: list[str | None], before: list, after: list) -> list[Change]:
    """Where two models' decisions (``Decision`` lists) on the same faces differ."""
    return [
        Change(i, t, b.name, a.name, round(float(b.distance), 4), round(float(a.distance), 4))
        for i, t, b, a in zip(items, truth, before, after, strict=True)
        if b.name != a.name
    ]


# -- evaluation sets --------------------------------------------------------------------------
@dataclass
class EvalSet:
    name: str
    X: np.ndarray  # known (labelled) faces
    truth: list[str]
    Xu: np.ndarray  # strangers
    items: list[str]  # for the change list: every row of X, Xu, then Xr
    Xr: np.ndarray = field(default_factory=lambda: np.zeros((0, 128), np.float32))  # unreviewed

    @property
    def all_vectors(self) -> np.ndarray:
        return np.concatenate([self.X, self.Xu, self.Xr]).astype(np.float32)

    @property
    def all_truth(self) -> list[str | None]:
        return [*self.truth, *([""] * len(self.Xu)), *([None] * len(self.Xr))]


def held_out_set(ws: Workspace, test_dir: Path, unknown_dir: Path | None) -> EvalSet:
    from facefleet.train.evaluate import embed_folder

    X, truth, _ = embed_folder(ws, Path(test_dir), labelled=True)
    Xu = np.zeros((0, 128), np.float32)
    if unknown_dir is not None:
        Xu, _, _ = embed_folder(ws, Path(unknown_dir), labelled=False)
    items = [f"test:{t}#{i}" for i, t in enumerate(truth)] + [f"stranger#{i}" for i in range(len(Xu))]
    return EvalSet("held-out", X, truth, Xu, items)


def replay_set(ws: Workspace, embedder_id: str, since: str | None) -> EvalSet:
    """Collected faces (recent ones when ``since``) with their stored embeddings."""
    store = ws.open_store()
    try:
        known, truth, strangers, open_, items = [], [], [], [], ([], [], [])
        for f in store.faces():
            meta = f.meta or {}
            if "origin" not in meta or f.status == "revoked":
                continue
            if since and str(meta.get("event_time") or f.created) < since:
                continue
            v = store.embedding(f.id, embedder_id)
            if v is None:
                continue
            if f.status in ("selected", "in_use") and f.person_name:
                known.append(v)
                truth.append(f.person_name)
                items[0].append(f"face {f.id}")
            elif f.status in ("selected", "in_use"):
                strangers.append(v)
                items[1].append(f"face {f.id}")
            else:
                open_.append(v)
                items[2].append(f"face {f.id}")
    finally:
        store.close()

    def arr(rows: list) -> np.ndarray:
        return np.array(rows, np.float32).reshape(-1, 128)

    return EvalSet("replay", arr(known), truth, arr(strangers), items[0] + items[1] + items[2], arr(open_))


def _load(ws: Workspace, ref: str, embedder_id: str):
    from facefleet.registry.catalog import bundle_path
    from facefleet.registry.inference import load_bundle
    from facefleet.registry.keys import load_public_key, public_key_path

    path = bundle_path(ws, ref)
    return load_bundle(path, load_public_key(public_key_path(ws.keys_dir)), expected_embedder_id=embedder_id)


def _desc(bundle) -> dict[str, Any]:
    return {
        "model": bundle.model,
        "version": bundle.version,
        "name": bundle.name,
        "labels": list(bundle.labels),
        "path": str(bundle.path),
    }


def validate(
    ws: Workspace,
    candidate: str,
    *,
    against: str = "production",
    test_dir: Path | None = None,
    unknown_dir: Path | None = None,
    replay: bool = True,
    since: str | None = None,
    promote: bool = False,
    policy: Policy | None = None,
) -> ValidationReport:
    """Score ``candidate`` and ``against`` on the same faces; judge; optionally promote."""
    from datetime import datetime, timedelta, timezone

    from facefleet.train.evaluate import evaluate_bundle, score_decisions
    from facefleet.train.pipeline import current_embedder_id

    policy = policy or Policy.from_config(ws.settings.validate)
    embedder_id = current_embedder_id(ws)
    cand = _load(ws, candidate, embedder_id)
    ref = against if against.startswith("@") or against.lstrip("vV").isdigit() else f"@{against}"
    try:
        base = _load(ws, ref, embedder_id)
    except ModelError:
        log.info("no %s model: judging on the policy's absolute floors", against)
        base = None
    if base is not None and base.version == cand.version:
        base = None  # judged alone: comparing a version with itself proves nothing
    test_dir = test_dir or (Path(policy.test_dir) if policy.test_dir else None)
    if test_dir is not None and not test_dir.is_absolute():
        test_dir = ws.root / test_dir
    unknown_dir = unknown_dir or (Path(policy.unknown_dir) if policy.unknown_dir else None)
    if unknown_dir is not None and not unknown_dir.is_absolute():
        unknown_dir = ws.root / unknown_dir
    sets: list[EvalSet] = []
    if test_dir is not None:
        sets.append(held_out_set(ws, test_dir, unknown_dir))
    if replay:
        if since is None and policy.replay_days is not None:
            since = (datetime.now(timezone.utc) - timedelta(days=policy.replay_days)).isoformat()
        sets.append(replay_set(ws, embedder_id, since))
    if not sets:
        raise FacefleetError("nothing to validate on: pass --test DIR and/or --replay")

    results: dict[str, dict[str, Any]] = {}
    changes: list[Change] = []
    for s in sets:
        results[s.name] = {
            "candidate": evaluate_bundle(cand, s.X, s.truth, s.Xu),
            "production": evaluate_bundle(base, s.X, s.truth, s.Xu) if base else None,
        }
        if base is not None and len(s.all_vectors):
            changes += changed_decisions(
                [f"{s.name} {i}" for i in s.items],
                s.all_truth,
                base.classify(s.all_vectors),
                cand.classify(s.all_vectors),
            )
    if len(sets) > 1:  # judged on every labelled face together
        allX = np.concatenate([s.X for s in sets])
        truth = [t for s in sets for t in s.truth]
        allU = np.concatenate([s.Xu for s in sets])

        def combined(b):
            known = b.classify(allX) if len(allX) else []
            unknown = b.classify(allU) if len(allU) else []
            return score_decisions(known, truth, unknown, b.labels)

        results["all"] = {"candidate": combined(cand), "production": combined(base) if base else None}
    final = results["all" if "all" in results else sets[0].name]
    checks = judge(
        final["candidate"].metrics, final["production"].metrics if final["production"] else None, policy
    )
    report = ValidationReport(
        _desc(cand), _desc(base) if base else None, results, checks, all(c.ok for c in checks), changes
    )
    _tag(ws, cand, report)
    if promote and report.passed:
        report.promoted = promote_passed(ws, cand.version, policy, report)
    return report


def promote_passed(
    ws: Workspace, version: int, policy: Policy, report: ValidationReport
) -> list[dict[str, Any]]:
    from facefleet.registry.versions import promote

    why = "validated: " + "; ".join(f"{c.name} {c.value:.4f} vs {c.limit:.4f}" for c in report.checks)
    moved = []
    for alias in ("validated", "production") if policy.promote_production else ("validated",):
        entry = promote(ws, version, alias, why=why[:500])
        if entry is not None:
            moved.append(entry)
    return moved


def _tag(ws: Workspace, bundle, report: ValidationReport) -> None:
    """Record the verdict on the model version (best effort: MLflow down is not fatal)."""
    try:
        from facefleet.registry.tracking import configure

        client = configure(ws)
        client.set_model_version_tag(
            bundle.model, str(bundle.version), "validation", "passed" if report.passed else "failed"
        )
    except Exception as exc:  # noqa: BLE001
        log.warning("could not tag the model version: %s", exc)


def format_report(report: ValidationReport) -> str:
    """Side-by-side table per evaluation set, the checks and the changed decisions."""
    c, p = report.candidate, report.production
    head = f"candidate v{c['version']} ({c['name']})"
    other = f"production v{p['version']} ({p['name']})" if p else "production: none"
    lines = [f"{head}  vs  {other}"]
    keys = [
        ("accuracy", ACCURACY),
        ("known false-reject", FRR),
        ("unknown false-accept", FAR),
        ("known faces", "known_faces"),
        ("unknown faces", "unknown_faces"),
    ]
    for name, res in report.results.items():
        lines += ["", f"[{name}]", f"{'metric':24s} {'production':>11s} {'candidate':>10s}"]
        for label, key in keys:
            pv = res["production"].metrics.get(key) if res["production"] else None
            cv = res["candidate"].metrics.get(key)
            lines.append(f"{label:24s} {_f(pv):>11s} {_f(cv):>10s}")
        people = {r.name: r for r in res["candidate"].people}
        base_people = {r.name: r for r in res["production"].people} if res["production"] else {}
        if people:
            lines.append(f"{'person':24s} {'faces':>5s} {'named before':>12s} {'named now':>9s}")
            for person, row in sorted(people.items()):
                b = base_people.get(person)
                lines.append(
                    f"{person[:24]:24s} {row.faces:5d} {(str(b.named) if b else '-'):>12s} {row.named:9d}"
                )
    lines += ["", "checks:"]
    lines += [
        f"  [{'ok' if k.ok else 'FAIL'}] {k.name}: {_f(k.value)} (limit {_f(k.limit)})" for k in report.checks
    ]
    if report.changes:
        lines += ["", f"decisions changed ({len(report.changes)}):"]
        for ch in report.changes[:50]:
            truth = "" if ch.truth is None else f" [truth: {ch.truth or 'stranger'}]"
            lines.append(f"  {ch.item}: {ch.before or 'unknown'} -> {ch.after or 'unknown'}{truth}")
    lines.append("")
    lines.append("PASSED" if report.passed else "FAILED")
    for e in report.promoted:
        lines.append(f"promoted v{e['to_version']} to @{e['alias']}")
    return "\n".join(lines)


def _f(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)

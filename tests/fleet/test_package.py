"""Offline packages: install.sh run for real into temporary models folders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from facefleet.errors import BundleError
from facefleet.fleet.package import make_package
from facefleet.registry.keys import public_key_path


def run_install(pkg: Path, models: Path, python: str, *extra: str):
    env = {**os.environ, "FACEFLEET_PYTHON": python}
    return subprocess.run(
        ["sh", str(pkg / "install.sh"), "--models-dir", str(models), "--keep", "2", *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize("python", [sys.executable, "none"], ids=["facefleet", "sha256sum-only"])
def test_install_sh_installs_switches_and_prunes(workspace, bundle_factory, tmp_path, python):
    pub = public_key_path(workspace.keys_dir)
    models = tmp_path / "device"
    for version in (1, 2, 3):
        pkg = make_package(bundle_factory(version), pub, tmp_path / f"pkg{version}")
        res = run_install(pkg, models, python)
        assert res.returncode == 0, res.stderr
        if python == "none":
            assert "not the signature" in res.stderr
    mdir = models / "face_model"
    assert os.readlink(mdir / "current") == "3" and os.readlink(mdir / "previous") == "2"
    assert sorted(p.name for p in mdir.iterdir()) == ["2", "3", "current", "previous"]


@pytest.mark.parametrize("python", [sys.executable, "none"], ids=["facefleet", "sha256sum-only"])
def test_install_sh_refuses_a_tampered_bundle(workspace, bundle_factory, tmp_path, python):
    pub = public_key_path(workspace.keys_dir)
    models = tmp_path / "device"
    assert run_install(make_package(bundle_factory(1), pub, tmp_path / "p1"), models, python).returncode == 0
    pkg = make_package(bundle_factory(2), pub, tmp_path / "p2")
    # replace the archive's model.npz and "fix" SHA256SUMS, as an attacker with the files would
    import io
    import tarfile

    archive = pkg / "face_model-2.tar.gz"
    with tarfile.open(archive) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(archive, "w:gz") as tar:
        for m, data in members:
            if m.name == "model.npz":
                data = data[:-4] + b"evil"
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    sums = subprocess.run(
        ["sha256sum", "face_model-2.tar.gz", "signing_key.pub.pem", "FILES.sha256"],
        cwd=pkg,
        capture_output=True,
        text=True,
    ).stdout
    (pkg / "SHA256SUMS").write_text(sums)
    res = run_install(pkg, models, python)
    assert res.returncode != 0
    assert "checksum" in res.stderr.lower() or "FAILED" in res.stderr
    mdir = models / "face_model"
    assert os.readlink(mdir / "current") == "1"
    assert sorted(p.name for p in mdir.iterdir()) == ["1", "current"]
    assert not [p for p in models.iterdir() if p.name.startswith(".")]


def test_package_refuses_a_tampered_bundle(workspace, bundle_factory, tmp_path):
    bundle = bundle_factory(1)
    (bundle / "model.npz").write_bytes(b"not the model")
    with pytest.raises(BundleError):
        make_package(bundle, public_key_path(workspace.keys_dir), tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()

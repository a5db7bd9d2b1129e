#!/usr/bin/env bash
# Install facefleet for development on a fresh Debian/Ubuntu machine: system packages the
# tests use (OpenSSH server for the deployment tests, PostgreSQL for the MLflow server-database
# tests), a virtualenv in .venv, and the package with its server, dask, report and dev extras.
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ]; then
  echo "installing openssh-server (used by the deployment tests)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openssh-server e2fsprogs >/dev/null
fi
# PostgreSQL 15 for the MLflow-on-PostgreSQL tests: they run initdb/pg_ctl themselves on a
# loopback port in a temporary folder, so the packaged service is stopped and not enabled.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "installing postgresql (used by the MLflow server-database tests)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _; do
      $SUDO pg_ctlcluster "$ver" "$name" stop 2>/dev/null || true
    done
  fi
fi

# headless Chromium and its driver: the web console tests drive real pages with Selenium
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "installing chromium and chromium-driver (used by the web console tests)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[server,dask,report,dev]"
# papermill runs report notebooks on the "python3" kernel: make it this virtualenv's Python.
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "facefleet installed in .venv ($(.venv/bin/facefleet --version))"

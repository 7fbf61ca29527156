#!/usr/bin/env bash
# Idempotent set-up: installs the pinned torch pair (requirements-torch.txt; only when no torch is
# importable, so a CUDA torch of your own is kept), then requirements.txt, requirements-test.txt and
# this package (editable). A rerun takes seconds.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
pins() { grep -E '^(torch|torchvision)==' requirements-torch.txt | tr '\n' ' '; }

if ! "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
  if "$PY" -c "import torch" >/dev/null 2>&1; then
    echo "[setup] torch present without torchvision: installing the matching torchvision"
    "$PY" -m pip install -q "$(grep -E '^torchvision==' requirements-torch.txt)" || "$PY" -m pip install -q $(pins)
  else
    echo "[setup] installing $(pins)"
    "$PY" -m pip install -q $(pins)
  fi
else
  echo "[setup] torch $("$PY" -c 'import torch; print(torch.__version__)') already installed: kept"
fi

stamp=".setup-stamp"
want="$(cat requirements-torch.txt requirements.txt requirements-test.txt pyproject.toml | sha256sum | cut -c1-16)"
# imports are checked from / so that this checkout's folder on sys.path does not hide a missing install
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && \
   (cd / && "$PY" -c "import cityscapesscripts, timm, cv2, faiss, sklearn, skimage, panopticapi, hotcoco, deptry, threadpoolctl, importlinter, grimp, pydensecrf") >/dev/null 2>&1; then
  echo "[setup] requirements already satisfied"
else
  echo "[setup] installing requirements"
  "$PY" -m pip install -q -r requirements.txt -r requirements-test.txt
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

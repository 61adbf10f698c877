#!/usr/bin/env bash
# `make gpu-check`, on a GPU host that may have no network: checks what needs CUDA.
#
#   GPU_PYTHON=python3 GPU_BUNDLE=.gpu-bundle GPU_VENV=.venv-gpu tools/gpu_check.sh [gpu_check.py options]
#
# 1. No nvidia-smi, or the host's Python has no PyTorch that sees a GPU: say so, exit 0.
# 2. A virtual environment $GPU_VENV that reuses the host's PyTorch (--system-site-packages, plus
#    the host interpreter's own site-packages when that interpreter is itself a venv), with the
#    wheels of $GPU_BUNDLE (`make gpu-bundle`) and this project installed offline, no torch.
# 3. bubblewrap from the bundle's Debian package (dpkg -x into the venv) where bwrap is missing.
# 4. benchmarks/gpu_check.py: GPU tests, grading in the sandbox, FPN vs smp throughput,
#    seconds per graded submission -> build/gpu-check.json and a summary.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${GPU_PYTHON:-python3}
BUNDLE=${GPU_BUNDLE:-.gpu-bundle}
VENV=${GPU_VENV:-.venv-gpu}
say() { printf 'gpu-check: %s\n' "$*"; }

if [ -n "${GPU_CHECK_ALLOW_CPU:-}" ]; then  # tests this script on a machine without a GPU
  say "GPU_CHECK_ALLOW_CPU is set: running without a GPU"; set -- --allow-cpu "$@"
elif ! command -v nvidia-smi >/dev/null 2>&1; then
  say "no nvidia-smi here: no NVIDIA GPU to check (nothing done)"; exit 0
elif ! command -v "$PY" >/dev/null 2>&1 || ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  say "$PY has no PyTorch that sees a CUDA GPU (torch.cuda.is_available() is False or torch is missing): nothing to check"
  exit 0
fi

# --- the environment --------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV from $PY (system site packages: the host's PyTorch)"
  "$PY" -m venv --system-site-packages "$VENV" 2>/dev/null || "$PY" -m venv --system-site-packages --without-pip "$VENV"
fi
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# A venv made from a venv's interpreter sees the *base* installation, not that venv's packages
# (where the host's torch usually is): add the host interpreter's site folders explicitly.
"$PY" - "$SITE/_gpu_host_site.pth" <<'EOF'
import site, sys, sysconfig
dirs = [d for d in dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"],
                                  sysconfig.get_paths()["platlib"]])]
with open(sys.argv[1], "w") as fh:
    fh.write("import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dirs) + "\n")
EOF
"$VENV/bin/python" -c 'import torch' || { say "the venv does not see the host's torch"; exit 1; }

if "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then PIP=("$VENV/bin/python" -m pip)
else PIP=("$PY" -m pip --python "$VENV/bin/python"); fi
PIP+=(install --quiet --disable-pip-version-check --no-index --no-deps)

STAMP="$VENV/.installed"
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || { [ -f "$BUNDLE/manifest.json" ] && [ "$BUNDLE/manifest.json" -nt "$STAMP" ]; }; then
  if compgen -G "$BUNDLE/*.whl" >/dev/null; then
    say "installing $(ls "$BUNDLE"/*.whl | wc -l) wheels from $BUNDLE (offline, no dependencies resolved: the host's packages are reused)"
    "${PIP[@]}" --find-links "$BUNDLE" "$BUNDLE"/*.whl
  else
    say "WARNING: no wheels in $BUNDLE (run 'make gpu-bundle' on a machine online and copy $BUNDLE here); using what the host has"
  fi
  say "installing this project (editable, offline)"
  "${PIP[@]}" --no-build-isolation -e .
  "$VENV/bin/python" -m pip check 2>/dev/null | sed 's/^/gpu-check: pip check: /' | head -20 || true
  touch "$STAMP"
fi

# --- bubblewrap -----------------------------------------------------------------------
if ! command -v bwrap >/dev/null 2>&1; then
  deb=$(ls "$BUNDLE"/bubblewrap_*.deb 2>/dev/null | tail -1 || true)
  if [ -n "$deb" ] && command -v dpkg >/dev/null 2>&1; then
    say "unpacking $(basename "$deb") into $VENV/bwrap (bwrap is not installed)"
    rm -rf "$VENV/bwrap" && dpkg -x "$deb" "$VENV/bwrap"
    export PATH="$(cd "$VENV" && pwd)/bwrap/usr/bin:$PATH"
  else
    say "WARNING: no bwrap and no bubblewrap package in $BUNDLE: grading in the sandbox will fail"
  fi
fi
command -v bwrap >/dev/null 2>&1 && say "bwrap: $(command -v bwrap) ($(bwrap --version 2>&1 | head -1))"

# --- the checks --------------------------------------------------------------------------
export PYTHONUNBUFFERED=1
exec "$VENV/bin/python" benchmarks/gpu_check.py "$@"

#!/usr/bin/env bash
# Install what the platform needs into .venv; with --test, what the tests need as well.
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
WHEELS=${CS_WHEEL_CACHE:-$HOME/.cache/cs-platform/wheels}
LLAMA_VERSION=0.3.36
FOR_TESTS=false
[ "${1:-}" = "--test" ] && FOR_TESTS=true

apt_install() {
  # System packages, when this machine lets us install them (root with apt-get); else say what is missing.
  local missing=()
  for package in "$@"; do dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing ${missing[*]} with apt-get…"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "Not installed (install them with your package manager): ${missing[*]}" >&2
    return 1
  fi
}

# Tesseract with Chinese and English data: OCR of images for text-only models. Optional for running.
apt_install tesseract-ocr tesseract-ocr-chi-sim tesseract-ocr-eng || echo "Continuing without OCR." >&2
if $FOR_TESTS; then
  # Debian's Chromium for the browser tests (never a browser download), and CJK fonts for screenshots;
  # nginx and envsubst (gettext-base) for the front-proxy test, which runs deploy/nginx in front of daphne.
  apt_install chromium fonts-noto-cjk nginx gettext-base
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

# llama-cpp-python is built once from source without native CPU flags (a native build dies with
# "Illegal instruction" on machines that advertise instructions they refuse), and the wheel is cached.
if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
  echo "Building llama-cpp-python $LLAMA_VERSION (a few minutes, once per machine)…"
  mkdir -p "$WHEELS"
  CMAKE_ARGS="-DGGML_NATIVE=OFF" FORCE_CMAKE=1 .venv/bin/pip wheel -q --no-deps --no-binary llama-cpp-python \
    -w "$WHEELS" "llama-cpp-python==$LLAMA_VERSION"
fi

stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q --find-links "$WHEELS" --only-binary llama-cpp-python -e ".[dev,local-model]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

#!/usr/bin/env bash
# Create .venv with Python 3.11 and install the pinned requirements (reused when up to date):
# the runtime set the image installs (requirements.txt) plus the tests and tools
# (requirements/dev.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  for candidate in "${PYTHON:-}" python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  echo "Python 3.11 not found (set PYTHON=/path/to/python3.11)" >&2; return 1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

python=$(find_python)
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $python"
  if ! "$python" -m venv .venv 2>/dev/null; then
    echo "venv module unavailable: installing Debian's python3-venv"
    rm -rf .venv
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3.11-venv >/dev/null || true
    "$python" -m venv .venv
  fi
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements/bootstrap.txt
echo "installing the pinned requirements (requirements.txt, requirements/dev.txt) with uv"
.venv/bin/uv pip sync -q --python .venv/bin/python requirements.txt requirements/dev.txt
# Byte-compile once: this environment may set PYTHONDONTWRITEBYTECODE, which otherwise makes
# every Airflow/dbt start-up compile from source (about twice as slow).
echo "byte-compiling site-packages (once per install, ~30 s)"
.venv/bin/python -m compileall -q -j 0 .venv/lib/python3.11/site-packages >/dev/null 2>&1 || true

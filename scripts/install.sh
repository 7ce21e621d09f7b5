#!/usr/bin/env bash
# One-command setup: system packages (bubblewrap for the sandbox, git, wrk for the benchmarks), a virtualenv, the project.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)
command -v git >/dev/null 2>&1 || need_apt+=(git)
# The HTTP benchmarks drive the server with wrk; without it they fall back to a much heavier Python client.
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}"
  else
    echo "install: please install ${need_apt[*]} with your package manager (the sandbox needs bubblewrap)" >&2
  fi
fi

PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev,bench]'
echo "installed: activate with 'source .venv/bin/activate' (or use .venv/bin/control-tower)"

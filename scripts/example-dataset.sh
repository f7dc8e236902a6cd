#!/usr/bin/env bash
# The example dataset, results/example-dataset: the published CPU-estimate folders plus one
# sweep on a simulated NVIDIA board (configs/sweep-example-simulated-gpu.yaml), exported as one
# dataset with its card, then validated. Run on a quiet machine:
#   bash scripts/example-dataset.sh
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
TOKENWATT_NVML_MODULE=tokenwatt.sim.nvml TOKENWATT_SIM_GPUS=1 TOKENWATT_SIM_POWER_W=310 \
  "$py" -m tokenwatt.cli sweep configs/sweep-example-simulated-gpu.yaml --out "$work/simulated-gpu" -q
"$py" -m tokenwatt.cli validate "$work/simulated-gpu"
rm -rf results/example-dataset
folders=$(ls -d results/cpu-estimate-*/)
# shellcheck disable=SC2086
"$py" -m tokenwatt.cli export $folders "$work/simulated-gpu" --out results/example-dataset \
  --name "tokenwatt example dataset (CPU estimates and a simulated GPU: not measurements)"
"$py" -m tokenwatt.cli validate results/example-dataset

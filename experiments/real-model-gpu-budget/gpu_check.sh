#!/usr/bin/env bash
# Device check for real-model runs (README.md in this folder): on a machine with a GPU,
# without network, in < 10 minutes: a random-weight model with Gemma-2-2B's shapes and a random
# CLT with mntss/clt-gemma-2-2b-426k's shapes (decoders offloaded to host memory, as
# config/gemma-2-2b.yaml does), a 32-token and a 64-token prompt traced (8192 feature nodes),
# pruned and scored, one intervention each; prints time and peak GPU memory as JSON.
#   bash experiments/real-model-gpu-budget/gpu_check.sh               # needs ~35 GB host RAM
#   bash experiments/real-model-gpu-budget/gpu_check.sh --small       # reduced shapes, CPU, < 1 min
#   bash experiments/real-model-gpu-budget/gpu_check.sh --no-offload  # decoders on the GPU too
#                                                                     # (~28 GB more)
# Needs python3 with torch, transformers, pandas, numpy, pyyaml, safetensors, tqdm; llmbio is
# read from src/ (no install, no snakemake). The JSON also lands in $OUT (default results/).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # nothing is downloaded
OUT="${OUT:-results}"
mkdir -p "$OUT"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'cuda', torch.cuda.is_available())"
TOKENS=32,64
case " $* " in *" --small "*) TOKENS=32 ;; esac
timeout 570 python3 experiments/real-model-gpu-budget/gpu_check.py --tokens "$TOKENS" --out "$OUT/gpu_check.json" "$@"

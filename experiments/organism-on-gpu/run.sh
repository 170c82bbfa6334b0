#!/usr/bin/env bash
# A whole organism run on a machine with a GPU (the model and the transcoders train there; the
# analysis jobs use every CPU core). Default: config/organism-d256.yaml.
#   bash experiments/organism-on-gpu/run.sh [CONFIG] [TIME_LIMIT_S]
# Prints the run's audit and timeline; with $OUT set, copies its tables, figures and logs
# there (results.tgz: no model, transcoder or activation cache).
set -uo pipefail
cd "$(dirname "$0")/../.."
CONFIG="${1:-config/organism-d256.yaml}"
LIMIT="${2:-900}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT="${OUT:-/tmp/gpu_organism}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import sys, torch, transformers, snakemake; print(sys.version.split()[0], 'torch', \
torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
RUN=$(python3 -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['run'])" "$CONFIG")
start=$(date +%s)
timeout "$LIMIT" python3 -m snakemake --cores "$(nproc)" --configfile "$CONFIG" --keep-going \
  > "$OUT/snakemake.log" 2>&1
echo "snakemake rc=$? after $(( $(date +%s) - start )) s"
tail -5 "$OUT/snakemake.log"
python3 benchmarks/pipeline_times.py "results/$RUN" || true
grep -h -E "training took|trained|cached" "results/$RUN"/logs/*.log || true
head -40 "results/$RUN/audit.md" 2>/dev/null || true
tar czf "$OUT/results.tgz" --exclude=activations --exclude=model --exclude=clt --exclude=plt \
  --exclude=corpus.parquet --exclude="*.graph.safetensors" --exclude="*.html" --exclude=graph_files "results/$RUN"
ls -la "$OUT"

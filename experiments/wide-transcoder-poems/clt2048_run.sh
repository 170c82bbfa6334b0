#!/usr/bin/env bash
# config/organism-clt2048.yaml end to end on a GPU machine, from the default organism carried in
# as bytes (results/clt-base: world, corpus, tokenizer, model), so the organism is not retrained:
# the cache and both transcoders train on the GPU, everything else on every CPU core.
#   bash experiments/wide-transcoder-poems/clt2048_run.sh [TIME_LIMIT_S]
# Prints the timeline and the audit's head; with $OUT set, packs claims, logs and timings there.
set -uo pipefail
cd "$(dirname "$0")/../.."
source experiments/wide-transcoder-poems/seed_run.sh
LIMIT="${1:-600}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT="${OUT:-/tmp/clt2048}"
mkdir -p "$OUT"
run=results/organism-clt2048
seed_run "$run" || exit 1
start=$(date +%s)
timeout "$LIMIT" python3 -m snakemake --cores "$(nproc)" --configfile config/organism-clt2048.yaml \
  --rerun-triggers mtime --keep-going > "$OUT/snakemake.log" 2>&1
echo "snakemake rc=$? after $(( $(date +%s) - start )) s"
grep -h -E "trained|cached" "$run"/logs/*.log || true
python3 benchmarks/pipeline_times.py "$run" | tail -14 || true
head -5 "$run/audit.md" 2>/dev/null || true
tar czf "$OUT/run.tgz" --ignore-failed-read "$run"/audit.md "$run"/audit.parquet "$run"/studies/*/claims.parquet \
  "$run"/benchmarks "$run"/logs "$run"/transcoder/*.parquet "$run"/behaviour.parquet 2>/dev/null

#!/usr/bin/env bash
# Transcoder size vs the poems injection, on one organism (README.md in this folder).
# The CPU-trained default organism is carried in as bytes (results/clt-base: world, corpus,
# tokenizer, model); each variant caches activations and trains its CLT on the GPU
# (train.device), then the poems (and multilingual) studies run on the CPU cores.
#   bash experiments/wide-transcoder-poems/sweep.sh TIME_LIMIT_S VARIANT...   (VARIANT: a config in this folder)
# STUDIES (default "poems multilingual") picks the studies; STUDIES=clt trains the CLT only.
# With PACK set, copies tables, logs and the trained CLTs there.
set -uo pipefail
cd "$(dirname "$0")/../.."
source experiments/wide-transcoder-poems/seed_run.sh
LIMIT="${1:-480}"; shift
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OUT="${OUT:-/tmp/gpu_clt}"
mkdir -p "$OUT"
NCORES=$(nproc); PER=$(( NCORES / $# )); [ "$PER" -lt 1 ] && PER=1
start=$(date +%s)
for v in "$@"; do
  run="results/clt-$v"
  seed_run "$run" || exit 1
  (
    deadline=$(( start + LIMIT ))
    for target in ${STUDIES-poems multilingual}; do
      left=$(( deadline - $(date +%s) ))
      [ "$left" -le 10 ] && break
      path="$run/studies/$target/claims.parquet"
      [ "$target" = clt ] && path="$run/transcoder/clt"
      timeout "$left" python3 -m snakemake "$path" --cores "$PER" \
        --configfile "experiments/wide-transcoder-poems/configs/$v.yaml" --rerun-triggers mtime --keep-going \
        >> "$OUT/$v.snakemake.log" 2>&1
      echo "[$v] $target rc=$? at $(( $(date +%s) - start )) s"
    done
    timeout 60 python3 experiments/poems-plan-selection/plan_capture.py "$run" > "$OUT/$v.plan_capture.txt" 2>&1
    echo "[$v] plan capture rc=$? at $(( $(date +%s) - start )) s"
  ) &
done
wait
python3 experiments/wide-transcoder-poems/summary.py "$@" | tee "$OUT/summary.txt"
# PACK: each variant's tables, figures, claims, logs and timings in one archive, its CLT in
# another (split in 15 MB parts, for transfers that cap a file's size)
if [ -n "${PACK:-}" ]; then
  mkdir -p "$PACK"
  parts=()
  for v in "$@"; do
    r="results/clt-$v"
    parts+=("$r/benchmarks" "$r/logs" "$r/transcoder/clt_train_log.parquet")
    for s in "$r"/studies/*/; do parts+=("$s/tables" "$s/figures" "$s/claims.parquet"); done
  done
  tar czf "$PACK/tables.tgz" --ignore-failed-read "${parts[@]}" -C "$OUT" . 2>/dev/null
  for v in "$@"; do
    [ -d "results/clt-$v/transcoder/clt" ] || continue
    tar cf - -C "results/clt-$v/transcoder" clt | split -b 15M - "$PACK/clt-$v.tar."
  done
  ls -la "$PACK"
fi

#!/usr/bin/env bash
# Does the organism carry its output language as one direction, with more concepts or with the
# Chinese questions reordered? (README.md in this folder.) Each variant builds its world and
# corpus, trains the organism, the activation cache and the CLT on the GPU, then runs the
# multilingual study and steer.py on the CPU cores.
#   bash experiments/output-language-direction/run.sh TIME_LIMIT_S VARIANT...
# (VARIANT: a config in configs/.) With STEER_ONLY=1 each variant stops after its organism's
# behaviour (no cache, CLT or study); the steering then reads the model alone (the seed sweeps).
# Packs into $OUT each variant's behaviour, study tables, claims, logs and steering output.
set -uo pipefail
cd "$(dirname "$0")/../.."
LIMIT="${1:-480}"; shift
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OUT="${OUT:-/tmp/gpu_lexicon}"
LOGS=results/lex-logs  # packed with the tables into one archive
mkdir -p "$OUT" "$LOGS"
NCORES=$(nproc); PER=$(( NCORES / $# )); [ "$PER" -lt 2 ] && PER=2
start=$(date +%s)
for v in "$@"; do
  run="results/lex-$v"
  (
    left=$(( start + LIMIT - 120 - $(date +%s) ))  # steering takes ~90 s at 72 concepts
    targets=("$run/behaviour.parquet")
    [ "${STEER_ONLY:-0}" = 1 ] || targets+=("$run/studies/multilingual/claims.parquet")
    timeout "$left" python3 -m snakemake "${targets[@]}" --cores "$PER" --nolock \
      --configfile "experiments/output-language-direction/configs/$v.yaml" --keep-going > "$LOGS/$v.snakemake.log" 2>&1
    echo "[$v] pipeline rc=$? at $(( $(date +%s) - start )) s"
    left=$(( start + LIMIT - 5 - $(date +%s) ))
    timeout "$left" python3 experiments/output-language-direction/steer.py "$run" "$run/steer.csv" > "$LOGS/$v.steer.txt" 2>&1
    echo "[$v] steering rc=$? at $(( $(date +%s) - start )) s"
  ) &
done
wait
python3 experiments/output-language-direction/summary.py "$@" | tee "$OUT/summary.txt"
parts=("$LOGS")
for v in "$@"; do
  r="results/lex-$v"
  parts+=("$r/behaviour.parquet" "$r/behaviour_items.parquet" "$r/benchmarks" "$r/logs"
          "$r/transcoder/clt_train_log.parquet" "$r/training_curve.parquet" "$r/world.json"
          "$r/studies/multilingual/tables" "$r/studies/multilingual/claims.parquet" "$r/steer.csv")
done
tar czf "$OUT/tables.tgz" --ignore-failed-read "${parts[@]}" 2>/dev/null
ls -la "$OUT"

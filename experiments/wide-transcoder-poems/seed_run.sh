# Sourced by sweep.sh and clt2048_run.sh: `seed_run RUN` makes results/RUN from the carried
# default organism (results/clt-base: world, corpus, tokenizer, model), its files dated in the
# DAG's order whatever the copy did to their times, so Snakemake starts at the activation cache.
seed_run() {
  local run="$1"
  rm -rf "$run" && mkdir -p "$run" && cp -a results/clt-base/. "$run/" || return 1
  touch -d '-40 min' "$run/world.json"
  touch -d '-30 min' "$run/corpus.parquet"
  find "$run/tokenizer" -exec touch -d '-20 min' {} +
  find "$run/model" "$run/training_curve.parquet" -exec touch -d '-10 min' {} +
}

#!/usr/bin/env bash
# The cross-check against circuit-tracer, the reference implementation of the Circuit Tracing
# method: every test marked `crosscheck` (attribution graphs, interventions, pruning and scores,
# graph files, transcoder files), run in .venv-ct, a second virtual environment that holds
# circuit-tracer 0.5.0 and the transformers < 5 it pins (the project needs transformers 5). The
# project's code comes from src/ on PYTHONPATH, so nothing reinstalls transformers there.
#
# .venv-ct is built on first use and rebuilt when requirements.txt changes. Caches, temporary
# files and the log stay inside the repository folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
venv=$root/.venv-ct
lock=tests/crosscheck/requirements.txt

export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
if ! cmp -s "$lock" "$venv/installed-requirements.txt"; then
  echo "cross-check: building $venv from $lock"
  rm -rf "$venv"
  python3 -m venv "$venv"
  # torch first and pinned: left to the resolver it pulls a multi-GB CUDA build
  "$venv/bin/pip" install -q torch==2.13.0
  "$venv/bin/pip" install -q -r "$lock"
  cp "$lock" "$venv/installed-requirements.txt"
fi

mapfile -t files < <(grep -rl --include='test_*.py' 'mark\.crosscheck' tests | sort)
log=$venv/last-run.log
HF_HUB_OFFLINE=1 HF_HOME=$venv/cache/huggingface XDG_CACHE_HOME=$venv/cache \
  PYTHONPATH=$root/src "$venv/bin/python" -m pytest -q -rs -p no:cacheprovider \
  --basetemp="$venv/tmp" -m crosscheck "${files[@]}" | tee "$log"
# a skip here means part of circuit-tracer did not import: that must fail, not pass quietly
if grep -q '^SKIPPED' "$log"; then
  echo "cross-check: tests were skipped in $venv (see $log); rebuild it: rm -rf $venv" >&2
  exit 1
fi

"""One row per variant of sweep.sh (this folder): CLT size and training time, plan share, and
the poems / multilingual claims' measured values (NaN where the step did not finish).

    python experiments/wide-transcoder-poems/summary.py G0 G1 ...   (reads results/clt-<variant>/)
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pandas as pd

CLAIMS = {
    "poems": ["injection_calibrated_success", "injection_calibrated_control",
              "suppression_other_rhyme", "injection_success"],
    "multilingual": ["operation_swap_heldout_en", "operation_swap_heldout_fr",
                     "operation_swap_heldout_zh", "language_swap_heldout_en",
                     "swaps_are_specific"],
}  # fmt: skip


def row(variant: str) -> dict:
    run = Path("results") / f"clt-{variant}"
    out: dict = {"variant": variant}
    bench = run / "benchmarks" / "train_transcoder_clt.tsv"
    if bench.exists():
        out["clt_train_s"] = round(float(pd.read_csv(bench, sep="\t")["s"].iloc[0]), 1)
    log = run / "transcoder" / "clt_train_log.parquet"
    if log.exists():
        last = pd.read_parquet(log).iloc[-1]
        out.update(
            l0=round(float(last["l0"]), 1),
            nmse=round(float(last["nmse"]), 4),
            dead=round(float(last["dead_fraction"]), 4),
        )
    text = Path(os.environ.get("OUT", "/tmp/gpu_clt")) / f"{variant}.plan_capture.txt"
    if text.exists():
        m = re.search(r"reconstruction: (\d+)%", text.read_text())
        out["plan_share"] = int(m.group(1)) / 100 if m else float("nan")
    for study, ids in CLAIMS.items():
        path = run / "studies" / study / "claims.parquet"
        claims = pd.read_parquet(path).set_index("claim_id") if path.exists() else None
        for cid in ids:
            ok = claims is not None and cid in claims.index
            out[cid] = float(claims.loc[cid, "measured"]) if ok else float("nan")
    cal = run / "studies" / "poems" / "tables" / "swap_calibration.parquet"
    if cal.exists():
        chosen = pd.read_parquet(cal).query("chosen").iloc[0]
        out["poems_chosen"] = f"{chosen['form']}@{int(chosen['k'])}"
    return out


if __name__ == "__main__":
    pd.set_option("display.width", 250)
    print(pd.DataFrame([row(v) for v in sys.argv[1:]]).set_index("variant").T.to_string())

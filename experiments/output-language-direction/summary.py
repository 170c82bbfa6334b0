"""One line per lexicon variant: what the organism learned, the multilingual study's held-out
swaps, and steering along the mean difference (steer.py).

    python experiments/output-language-direction/summary.py L24 L72 ...

It reads results/lex-<variant>/ for each variant named.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

LEXICON = [f"{rel}_{lang}" for rel in ("antonym", "synonym") for lang in ("en", "fr", "zh")]


def row(variant: str) -> dict:
    run = Path("results") / f"lex-{variant}"
    out: dict = {"variant": variant}
    if (run / "behaviour.parquet").exists():
        b = pd.read_parquet(run / "behaviour.parquet").set_index(["task", "split"])["accuracy"]
        out["lexicon_min"] = round(min(b[(t, "seen")] for t in LEXICON), 3)
        out["addition_heldout"] = round(b[("addition", "heldout")], 3)
        out["two_hop_heldout"] = round(b[("two_hop", "heldout")], 3)
        out["rhyme_plan"] = round(b[("rhyme_plan", "seen")], 3)
        out["refusal_harmful"] = round(b[("refusal", "harmful")], 3)
    claims = run / "studies/multilingual/claims.parquet"
    if claims.exists():
        c = pd.read_parquet(claims).set_index("claim_id")["measured"]
        for swap in ("operation", "operand", "language"):
            out[swap] = "/".join(
                f"{c.get(f'{swap}_swap_heldout_{lang}', float('nan')):.2f}"
                for lang in ("en", "fr", "zh")
            )
    steer = run / "steer.csv"
    if steer.exists():
        s = pd.read_csv(steer)
        for swap in ("operation", "language"):
            mlp = s[(s["part"] == "mlp") & (s["swap"] == swap)]
            out[f"{swap}_steer"] = round(mlp["steering"].mean(), 3)
            out[f"{swap}_steer_last"] = round(mlp["steering_last"].astype(bool).mean(), 3)
        lang = s[(s["part"] == "mlp") & (s["swap"] == "language")]
        out["language_in_target"] = round(lang["in_target"].mean(), 3)
        with_zh = lang["pair"].str.contains("zh")
        out["language_steer_zh"] = round(lang.loc[with_zh, "steering"].mean(), 3)
        out["language_steer_enfr"] = round(lang.loc[~with_zh, "steering"].mean(), 3)
        out["heldout_concepts"] = s["concept"].nunique()
    return out


if __name__ == "__main__":
    table = pd.DataFrame([row(v) for v in sys.argv[1:]])
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(table.to_string(index=False))

"""Draw the README's audit picture from a run's audit table.

    python docs/img/draw_audit.py results/organism docs/img/audit.png

One bar per study: claims passed and not passed (not-applicable claims left out), the count,
and whether the study's central claims all pass where the audit marks them (``central``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

PASS, FAIL = "#4c9a5b", "#d9a3a3"


def draw(run_dir: Path, out: Path) -> None:
    audit = pd.read_parquet(run_dir / "audit.parquet")
    claims = audit[(audit["kind"] == "claim") & (audit["status"] != "not_applicable")]
    figures = audit[audit["kind"] == "figure"]
    per_study = claims.groupby("study", sort=False)["passed"].agg(["sum", "size"])
    central = _central(claims)

    fig, ax = plt.subplots(figsize=(7.2, 0.42 * len(per_study) + 1.25), dpi=100)
    y = range(len(per_study))[::-1]
    ax.barh(y, per_study["sum"], color=PASS, label="pass")
    ax.barh(y, per_study["size"] - per_study["sum"], left=per_study["sum"], color=FAIL,
            label="fail")  # fmt: skip
    for yi, (study, r) in zip(y, per_study.iterrows(), strict=True):
        note = f"{int(r['sum'])} of {int(r['size'])}"
        if study in central:
            note += "   central: " + ("reproduced" if central[study] else "not reproduced")
        ax.text(r["size"] + 0.3, yi, note, va="center", fontsize=9)
    ax.set_yticks(list(y), per_study.index)
    ax.set_xlim(0, per_study["size"].max() * 1.9)
    ax.set_xlabel("claims")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    title = (
        f"{int(claims['passed'].sum())} of {len(claims)} claims pass, "
        f"{int(figures['passed'].sum())} of {len(figures)} figures traced to their tables"
    )
    if central:
        title += f"\ncentral claims: {sum(central.values())} of {len(central)} studies"
    ax.set_title(title, fontsize=10, loc="left")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(out)


def _central(claims: pd.DataFrame) -> dict[str, bool]:
    """Per study that marks central claims: do they all pass?"""
    if "central" not in claims.columns:
        return {}
    marked = claims[claims["central"].fillna(False).astype(bool)]
    return marked.groupby("study", sort=False)["passed"].all().to_dict()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python docs/img/draw_audit.py results/<run> docs/img/audit.png")
    draw(Path(sys.argv[1]), Path(sys.argv[2]))

"""Calibrated harmful-request edits of the refusals study, with random-feature controls.

The paper's form (harmful-request top 8 at -3x on the last token; injection at 2x a donor's
activation) moved few first tokens on the organism, so, as in the multihop study
(:mod:`llmbio.cases.multihop.swaps`), the supernode size ``k`` and the edit form are chosen
on a *calibration split* and the claims are tested on every other dialogue:

- calibration: training-pair dialogues of the template :data:`CAL_TEMPLATE` (harmful ones for
  the ablation, harmless ones for the injection); held-out pairs never enter it;
- ``k``: the harmful-request and harmless-request supernodes are the top ``k`` of their
  last-token contrast rankings (on training dialogues, as the paper-sized ones);
- forms (:data:`FORMS`): ``paper`` (ablation: harmful-request members x-3 on the last token;
  injection: set to 2x their values on the study's harmful donor prompt), or ``copy``: the
  members of both supernodes set, position by position (aligned from the end: dialogues of one
  length share a template), to their values on a donor dialogue of the other class (a training
  dialogue of the same length) times 1, 1.5 or 2, on the last token or from the harm token on.

A direction succeeds on a dialogue when the first token flips (ablation: harmful -> "Sure";
injection: harmless -> "I"). The chosen (k, form) is the smallest k at which one form reaches
:data:`SUCCESS_BAR` in *both* directions (its best form by the weaker direction), else the best
of the grid. The *control* repeats an edit with as many random features, drawn among those
active on the recipient or the donor outside both full rankings' top ``k``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from llmbio.interventions.batched import DenseEdits, run_batch
from llmbio.studies.swaps import calibration_grid, choose, random_features

K_GRID = (8, 16, 32, 64, 128)  # supernode sizes tried, in this order
FORMS = {  # name -> (kind, multiplier of the donor values, first position edited)
    "paper": ("paper", 1.0, "last"),
    "copy": ("copy", 1.0, "last"),
    "copy_x2": ("copy", 2.0, "last"),
    "copy_harm": ("copy", 1.0, "harm"),
    "copy_harm_x2": ("copy", 2.0, "harm"),
    "copy_span": ("copy", 1.0, "first"),
    "copy_span_x1.5": ("copy", 1.5, "first"),
    "copy_span_x2": ("copy", 2.0, "first"),
}
PAPER_SCALE, PAPER_INJECT = -3.0, 2.0
SUCCESS_BAR = 0.9
CAL_TEMPLATE = "Human : Tell me how to mix "  # calibration: training pairs in this template
# experiment -> (recipients harmful?, outcome column that counts as success)
DIRECTIONS = {"ablate_harmful_request": (True, "complied"),
              "inject_harmful_request": (False, "refused")}  # fmt: skip
SEED = 0


def first_position(lab, row: int) -> int:
    """The first ingredient (else the harm token): where the request's content starts."""
    from llmbio.world.safety import INGREDIENTS

    words = lab.tok.convert_ids_to_tokens(list(lab.items.at[row, "ids"]))
    found = [i for i, w in enumerate(words) if w in INGREDIENTS]
    return found[0] if found else lab.harm_pos[row]


def span_acts(lab, rows: list[int]) -> torch.Tensor:
    """Each dialogue's max activation from its first ingredient on, ``(len(rows), L * F)``."""
    out = []
    for g, (members, _) in enumerate(lab.groups):
        for b, row in enumerate(members):
            if row in rows:
                start = first_position(lab, row)
                out.append(lab.base[g].activations[b, :, start:].amax(1).flatten())
    n = lab.clt.n_layers * lab.clt.n_features
    return torch.stack(out) if out else torch.zeros(0, n)


def rankings(lab) -> dict[str, dict[str, list[tuple[int, int]]]]:
    """Harmful- and harmless-request features by contrast on training dialogues, on the last
    token (``last``) or on the max from the first ingredient on (``span``)."""
    from llmbio.cases.refusals.tables import contrast_top

    seen = lab.items[~lab.items["heldout"]]
    pos, neg = list(seen.index[seen["harmful"]]), list(seen.index[~seen["harmful"]])
    n, f = max(K_GRID), lab.clt.n_features
    out = {}
    for name, acts in (
        ("last", lambda r: lab.acts(r, "last")),
        ("span", lambda r: span_acts(lab, r)),
    ):
        h, s = acts(pos), acts(neg)
        out[name] = {"harmful_request": contrast_top(h, s, n, f),
                     "harmless_request": contrast_top(s, h, n, f)}  # fmt: skip
    return out


def is_calibration(items: pd.DataFrame) -> pd.Series:
    return ~items["heldout"] & items["prompt"].str.startswith(CAL_TEMPLATE)


def _donors(lab, rows: list[int], group: list[int], harmful: bool) -> list[int | None]:
    """Per recipient, a training dialogue of the other class in its length group (rotating)."""
    pool = [r for r in group if lab.harmful[r] != harmful and not lab.items.at[r, "heldout"]]
    return [pool[i % len(pool)] if pool else None for i in range(len(rows))]


def _fill(lab, edits: DenseEdits, b, feats, form, recipient, donor_vals, harmful) -> None:
    """One recipient's edit: ``donor_vals`` ``(L, n, F)`` are the donor's activations."""
    kind, mult, where = FORMS[form]
    la = torch.tensor([x for x, _ in feats], dtype=torch.long)
    fe = torch.tensor([y for _, y in feats], dtype=torch.long)
    n = edits.scale.shape[2]
    if kind == "paper" and harmful:
        edits.scale[b, la, n - 1, fe] = PAPER_SCALE
        return
    start = {"last": n - 1, "harm": lab.harm_pos[recipient]}.get(where)
    start = first_position(lab, recipient) if start is None else start
    pos = torch.arange(start, n)
    edits.scale[b, la[:, None], pos[None], fe[:, None]] = 0.0
    m = PAPER_INJECT if kind == "paper" else mult
    edits.offset[b, la[:, None], pos[None], fe[:, None]] = (
        m * donor_vals[la[:, None], pos[None], fe[:, None]]
    )


def _ranking(ranked: dict, form: str) -> dict:
    return ranked["span" if FORMS[form][2] == "first" else "last"]


def _features(ranked: dict, k: int, form: str, harmful: bool) -> list[tuple[int, int]]:
    rank = _ranking(ranked, form)
    hr, hl = rank["harmful_request"][:k], rank["harmless_request"][:k]
    return list(hr) if FORMS[form][0] == "paper" else list(dict.fromkeys([*hr, *hl]))


def sweep(lab, ranked, k, form, direction, rows_wanted, donor_acts=None, control=False):
    """Outcome rows of one (k, form, direction) over the wanted dialogues, all length groups.

    ``donor_acts``: the study's harmful donor prompt's last-token activations ``(L, F)`` (the
    paper's injection); ``control``: random features instead of the supernodes.
    """
    harmful, _ = DIRECTIONS[direction]
    rng = np.random.default_rng(SEED)
    rank = _ranking(ranked, form)
    exclude = set(rank["harmful_request"][:k]) | set(rank["harmless_request"][:k])
    frames = []
    for g, (members, ids) in enumerate(lab.groups):
        keep = [i for i, r in enumerate(members) if lab.harmful[r] == harmful and r in rows_wanted]
        if not keep:
            continue
        sub = [members[i] for i in keep]
        donors = _donors(lab, sub, members, harmful)
        acts = lab.base[g].activations
        edits = DenseEdits.identity(lab.clt, len(keep), ids.shape[1])
        n_feats = []
        for b, (i, r, d) in enumerate(zip(keep, sub, donors, strict=True)):
            feats = _features(ranked, k, form, harmful)
            d_vals = acts[members.index(d)] if d is not None else torch.zeros_like(acts[i])
            if FORMS[form][0] == "paper" and not harmful:
                d_vals = (
                    torch.zeros_like(acts[i])
                    if donor_acts is None
                    else donor_acts[:, None].expand_as(acts[i])
                )
            if control:
                feats = random_features([acts[i], d_vals], exclude, len(feats), rng)
            n_feats.append(len(feats))
            if feats and (d is not None or FORMS[form][0] == "paper"):
                _fill(lab, edits, b, feats, form, r, d_vals, harmful)
        with torch.no_grad():  # no activations recorded: only the first token is needed
            logits = run_batch(lab.model, lab.clt, ids[keep], edits).logits[:, -1]
        res = lab.outcome(logits)
        before = lab.outcome(lab.base[g].logits[keep])
        res = res.assign(refused_before=before["refused"], complied_before=before["complied"])
        meta = lab.items.loc[sub, ["prompt", "split", "kind", "pair"]].reset_index(drop=True)
        frames.append(pd.concat([meta, res], axis=1).assign(n_features=n_feats))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def answered(lab) -> set[int]:
    """Rows whose baseline first token is their class's (harmful "I", harmless "Sure")."""
    out = set()
    for g, (members, _) in enumerate(lab.groups):
        base = lab.outcome(lab.base[g].logits)
        for b, row in enumerate(members):
            if base.at[b, "refused" if lab.harmful[row] else "complied"]:
                out.add(row)
    return out


def calibrate(lab, ranked, donor_acts) -> tuple[pd.DataFrame, str, int]:
    """The calibration grid (one row per direction, k, form) and the chosen form and k.

    Only calibration dialogues whose baseline answers as its class can flip, so only they
    count (none, as in a run that learnt nothing: no grid, the paper's form)."""
    cal = set(lab.items.index[is_calibration(lab.items)]) & answered(lab)

    def evaluate(k: int, direction: str, form: str) -> dict | None:
        out = sweep(lab, ranked, k, form, direction, cal, donor_acts)
        if out.empty:  # no dialogue of this direction can flip
            return None
        return {"n_cases": len(out), "mean_features": float(out["n_features"].mean()),
                "success_rate": float(out[DIRECTIONS[direction][1]].mean())}  # fmt: skip

    options = [{"direction": d, "form": f} for f in FORMS for d in DIRECTIONS]
    columns = ["direction", "form", "k", "n_cases", "mean_features", "success_rate"]
    sizes = K_GRID if cal else ()
    grid = calibration_grid(sizes, options, evaluate, SUCCESS_BAR, joint=_joint, columns=columns)
    joint = _joint(grid)
    if joint.empty:
        return grid.assign(chosen=False), "paper", K_GRID[0]
    best = choose(grid, SUCCESS_BAR, ["form", "k"], among=joint)
    return grid, str(best["form"]), int(best["k"])


def _joint(grid: pd.DataFrame) -> pd.DataFrame:
    """Per (k, form), the weaker direction's success rate."""
    if grid.empty:
        return pd.DataFrame(columns=["k", "form", "success_rate"])
    return grid.groupby(["k", "form"], as_index=False, sort=False)["success_rate"].min()


def swaps_table(lab, ranked, donor_acts, form: str, k: int) -> pd.DataFrame:
    """Every harmful (ablation) / harmless (injection) dialogue under the calibrated edit, the
    same edit with random features (``control_*``) and the paper's form (``variant``)."""
    cal = is_calibration(lab.items)
    every = set(lab.items.index)
    frames = []
    for direction in DIRECTIONS:
        for variant, f, kk in (("calibrated", form, k), ("paper", "paper", K_GRID[0])):
            out = sweep(lab, ranked, kk, f, direction, every, donor_acts)
            if out.empty:
                continue
            ctl = sweep(lab, ranked, kk, f, direction, every, donor_acts, control=True)
            out = out.assign(control_refused=ctl["refused"], control_complied=ctl["complied"],
                             control_top=ctl["top"], n_control=ctl["n_features"])  # fmt: skip
            frames.append(out.assign(experiment=direction, variant=variant, form=f, k=kk))
    if not frames:
        cols = ["experiment", "variant", "calibration", "split", "refused", "complied",
                "control_refused", "control_complied", "flipped", "control_flipped"]  # fmt: skip
        return pd.DataFrame(columns=cols)
    table = pd.concat(frames, ignore_index=True)
    cal_prompts = set(lab.items.loc[cal, "prompt"])
    table["calibration"] = table["prompt"].isin(cal_prompts)
    # a flip: the wanted first token after the edit where the baseline did not give it
    want = table["experiment"].map({e: c for e, (_, c) in DIRECTIONS.items()})
    for prefix in ("", "control_"):
        got = np.where(want == "refused", table[f"{prefix}refused"], table[f"{prefix}complied"])
        had = np.where(want == "refused", table["refused_before"], table["complied_before"])
        table[f"{prefix}flipped"] = got.astype(bool) & ~had.astype(bool)
    return table


def run_swaps(context, lab) -> None:
    """Calibrate, evaluate, save ``swap_calibration`` and ``swaps``, draw their figures."""
    from llmbio.tokenizer import UnknownTokenError, encode

    ranked = rankings(lab)
    donor = next((p for p in context.prompts("organism") if p.id == "donor_harmful"), None)
    donor_acts = None
    try:
        if donor is not None:
            ids = torch.tensor([encode(lab.tok, donor.text)])
            donor_acts = lab.pass_(ids).activations[0, :, -1]  # (L, F)
    except UnknownTokenError as err:
        print(f"no harmful donor: {err}")
    grid, form, k = calibrate(lab, ranked, donor_acts)
    context.save_table(grid, "swap_calibration")
    context.save_table(swaps_table(lab, ranked, donor_acts, form, k), "swaps")
    context.draw_figure("swap_calibration", draw_calibration, ["swap_calibration"])
    context.draw_figure("calibrated_edits", draw_swaps, ["swaps"])


def draw_calibration(grid: pd.DataFrame):
    import matplotlib.pyplot as plt

    from llmbio.studies.swaps import plot_calibration

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    if grid.empty:
        for ax in axes:
            ax.text(0.5, 0.5, "no calibration dialogue", ha="center")
            ax.set_axis_off()
        return fig
    for ax, (direction, part) in zip(axes, grid.groupby("direction", sort=False), strict=False):
        plot_calibration(ax, part, bar=SUCCESS_BAR, ylabel="success (calibration split)",
                         title=direction)  # fmt: skip
        if ax is not axes[-1] and ax.get_legend() is not None:
            ax.get_legend().remove()
    if axes[-1].get_legend() is not None:
        axes[-1].legend(title="form", fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    c = grid[grid["chosen"]]
    pick = f"{c.iloc[0]['form']}, k={c.iloc[0]['k']}" if len(c) else "none"
    fig.suptitle(f"Calibration on training pairs of one template: chosen {pick} (red)")
    fig.tight_layout()
    return fig


def draw_swaps(table: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    if table.empty:
        ax.text(0.5, 0.5, "no dialogue edited", ha="center")
        ax.set_axis_off()
        return fig
    rows = []
    evaluated = table[~table["calibration"]]
    for (exp, variant, split), part in evaluated.groupby(["experiment", "variant", "split"]):
        col = DIRECTIONS[exp][1]
        label = f"{exp.split('_')[0]} {variant}\n{split}"
        rows += [
            (label, "edit", part[col].mean()),
            (label, "random", part[f"control_{col}"].mean()),
        ]
    df = pd.DataFrame(rows, columns=["case", "features", "flipped"])
    x = np.arange(df["case"].nunique())
    for j, (name, part) in enumerate(df.groupby("features", sort=False)):
        ax.bar(x + 0.4 * j - 0.2, part["flipped"], width=0.4, label=name,
               color="#c0392b" if name == "edit" else "#999999")  # fmt: skip
    ax.set_xticks(x, df["case"].unique(), fontsize=7)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set(ylabel='share "Sure" (ablate) / "I" (inject)', ylim=(0, 1.02))
    ax.set_title("Dialogues outside the calibration split (baseline outcomes included)")
    ax.legend()
    fig.tight_layout()
    return fig

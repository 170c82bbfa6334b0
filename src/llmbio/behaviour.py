"""Behaviour evaluation of a model on the world's prompts (greedy decoding).

``evaluate_behaviour`` returns the per-item table (prompt, answer, prediction, correct, ...);
``summarise`` turns it into ``(task, split, n, accuracy)``. Refusal items count as correct when
the reply starts with the refusal opening; the summary reports the *refusal rate* per split.
A couplet's line counts for ``rhyme`` when it ends in the first line's rhyme family, and for
``rhyme_plan`` when it ends in the word the world's plan names for that line 1 and its mark.
"""

from __future__ import annotations

from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

from llmbio.tokenizer import encode  # noqa: E402
from llmbio.world import World  # noqa: E402


@torch.no_grad()
def greedy(
    model, prompts: list[list[int]], max_new_tokens: int, stop_id: int | None, batch_size: int = 256
) -> list[list[int]]:
    """Greedy continuations of token-id prompts, batched by prompt length (no padding)."""
    out: list[list[int]] = [[] for _ in prompts]
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        by_len[len(p)].append(i)
    for idx in by_len.values():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            ids = torch.tensor([prompts[i] for i in chunk])
            done = torch.zeros(len(chunk), dtype=torch.bool)
            for _ in range(max_new_tokens):
                nxt = model(input_ids=ids).logits[:, -1].argmax(-1)
                for j, i in enumerate(chunk):
                    if not done[j]:
                        out[i].append(int(nxt[j]))
                if stop_id is not None:
                    done |= nxt == stop_id
                if done.all():
                    break
                ids = torch.cat([ids, nxt[:, None]], dim=1)
    return out


def evaluate_behaviour(
    model, tokenizer, world: World, n_seen_addition: int = 500, max_new_tokens: int = 10
) -> pd.DataFrame:
    """Run every evaluation prompt of ``world``; one row per prompt."""
    model.eval()
    items = world.eval_items(n_seen_addition)
    newline = tokenizer.convert_tokens_to_ids("\n")
    prompts = [encode(tokenizer, it["prompt"]) for it in items]
    rhyme = [i for i, it in enumerate(items) if it["task"] == "rhyme"]
    single = [i for i, it in enumerate(items) if it["task"] != "rhyme"]
    preds: dict[int, str] = {}
    for i, toks in zip(single, greedy(model, [prompts[i] for i in single], 1, None), strict=True):
        preds[i] = tokenizer.convert_ids_to_tokens(toks[0])
    lines = greedy(model, [prompts[i] for i in rhyme], max_new_tokens, newline)
    for i, toks in zip(rhyme, lines, strict=True):
        words = [w for w in tokenizer.convert_ids_to_tokens(toks) if w != "\n"]
        preds[i] = " ".join(words)
    rows = []
    for i, it in enumerate(items):
        pred = preds[i]
        if it["task"] == "rhyme":
            last = pred.split()[-1] if pred else ""
            correct = world.poetry.family_of(last) == it["family"]
        else:
            correct = pred == it["answer"]
        rows.append({**it, "prediction": pred, "correct": bool(correct)})
        if it["task"] == "rhyme" and "planned_end" in it:
            # the stricter test: the line ends in the very word the couplet's plan names
            rows.append({**rows[-1], "task": "rhyme_plan", "correct": last == it["planned_end"]})
    return pd.DataFrame(rows)


def summarise(items: pd.DataFrame) -> pd.DataFrame:
    """``(task, split, n, accuracy)``; for ``refusal`` the accuracy column is the refusal rate."""
    g = items.groupby(["task", "split"], sort=True)["correct"]
    return g.agg(n="size", accuracy="mean").reset_index()


def plot_behaviour(summary: pd.DataFrame):
    """Bar chart of accuracy (refusal rate for refusals) per task and split, from the table."""
    df = summary.reset_index(drop=True)
    splits = list(dict.fromkeys(df["split"]))
    colours = dict(zip(splits, sns.color_palette("tab10", len(splits)), strict=True))
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(df)), 4.2))
    bars = ax.bar(range(len(df)), df["accuracy"], color=[colours[s] for s in df["split"]])
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in df["accuracy"]], fontsize=6)
    ax.set_xticks(range(len(df)), df["task"] + "\n" + df["split"], rotation=90, fontsize=7)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("accuracy  (refusal: refusal rate)")
    ax.set_title("Organism behaviour on the world's prompts")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[s]) for s in splits]
    ax.legend(
        handles, splits, title="split", fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left"
    )
    fig.tight_layout()
    return fig

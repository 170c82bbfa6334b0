"""Addition experiments on the organism: every ``calc : a + b =`` prompt at once, feature
transplants between prompts, and the arithmetic features in counting runs and citations.

- :func:`grid_activations`: the model's answer and every transcoder feature at the ``=`` of
  all ``n * n`` prompts (batched last-position passes, :mod:`llmbio.interventions.batched`);
- :func:`feature_census`: each feature's operand plot classified
  (:mod:`llmbio.cases.arithmetic.operand_plots`);
- :func:`swap_experiments`: groups of features set, at ``=``, to their values on a donor prompt
  with another sum (or pinned to their own values, or zeroed), on many prompts;
- :func:`context_activity`: the same features on the numbers of counting runs and citations
  from the corpus, against other documents.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from llmbio.cases.arithmetic.operand_plots import classify
from llmbio.interventions.batched import DenseEdits, run_batch
from llmbio.tokenizer import encode
from llmbio.world.arithmetic import PROMPT

MIN_ACTIVE = 0.005  # a feature enters the census if active on this share of the grid
PREFIX_LEN = 5  # "<bos> calc : a +" is shared by the n prompts of one a


class Grid(NamedTuple):
    """The ``N = n * n`` prompts in row-major order (``a`` slow, ``b`` fast)."""

    n: int
    ids: torch.Tensor  # (N, n_tokens)
    numbers: np.ndarray  # (vocab,) each token as an int, -1 if it is not a number
    answer: np.ndarray  # (N,) the model's top token as a number (-1: not a number)
    acts: np.ndarray  # (L, N, F) float32, at "="

    def cell(self, a: int, b: int) -> int:
        return a * self.n + b

    def heatmap(self, layer: int, feature: int) -> np.ndarray:
        return self.acts[layer, :, feature].reshape(self.n, self.n)


def grid_activations(model, clt, tokenizer, n: int) -> Grid:
    texts = [PROMPT.format(a=a, b=b) for a in range(n) for b in range(n)]
    ids = torch.tensor([encode(tokenizer, t) for t in texts])
    words = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    numbers = np.array([int(w) if w.isdigit() else -1 for w in words])
    logits, acts = last_position(model, clt, ids, prefix_len=PREFIX_LEN)
    answer = numbers[logits.argmax(-1).numpy()]
    return Grid(n, ids, numbers, answer, acts.numpy().astype(np.float32))


def last_position(
    model,
    clt,
    input_ids: torch.Tensor,
    mask: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    prefix_len: int = 0,
    chunk: int = 2000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-position logits ``(B, vocab)`` and transcoder activations ``(L, B, F)`` of prompts
    ``input_ids`` ``(B, n)``; where ``mask`` ``(L, B, F)`` is true the activation is set to
    ``values`` ``(L, B, F)`` (the activations returned are the edited ones).

    ``prefix_len``: the first tokens, shared by many prompts (``calc : a +`` by the ``n``
    prompts of one ``a``), run once per distinct prefix and reused through the key-value cache.
    """
    logits, acts = [], []
    for start in range(0, input_ids.shape[0], chunk):
        part = slice(start, start + chunk)
        edits = None
        if mask is not None:  # (L, b, F) -> (b, L, 1, F)
            m, v = (t[:, part].transpose(0, 1)[:, :, None] for t in (mask, values))
            edits = DenseEdits.setting(m, v, clt.W_enc.dtype)
        out = run_batch(
            model, clt, input_ids[part], edits, record_activations=True, last_only=True,
            prefix_len=prefix_len,
        )  # fmt: skip
        logits.append(out.logits[:, -1])
        acts.append(out.activations[:, :, -1].transpose(0, 1))
    return torch.cat(logits), torch.cat(acts, dim=1)


def feature_census(grid: Grid) -> pd.DataFrame:
    """The classified operand plot of every feature active on >= ``MIN_ACTIVE`` of the grid:
    ``layer``, ``feature``, ``frac_active``, ``mean``, ``std`` and the columns of
    :func:`llmbio.cases.arithmetic.operand_plots.classify`."""
    L, N, F = grid.acts.shape
    X = grid.acts.transpose(0, 2, 1).reshape(L * F, N)
    frac = (X > 0).mean(1)
    keep = np.flatnonzero((frac >= MIN_ACTIVE) & (X.std(1) > 0))
    table = classify(X[keep].reshape(-1, grid.n, grid.n))
    meta = pd.DataFrame(
        {"layer": keep // F, "feature": keep % F, "frac_active": frac[keep],
         "mean": X[keep].mean(1), "std": X[keep].std(1)}
    )  # fmt: skip
    return pd.concat([meta, table], axis=1)


def pick_donor(n: int, a: int, b: int, target: int) -> tuple[int, int] | None:
    """A prompt summing to ``target`` that shares an operand with ``a + b`` (``a`` first)."""
    if 0 <= target - a < n:
        return a, target - a
    if 0 <= target - b < n:
        return target - b, b
    return None


PLAN_COLUMNS = ["a", "b", "sum", "ones_donor_sum", "ones_donor", "tens_donor_sum", "tens_donor"]


def swap_plan(grid: Grid, n_prompts: int, seed: int, base: int = 10) -> pd.DataFrame:
    """Recipients the model gets right, each with a donor of the same tens and another ones
    digit (``ones_donor``: its grid cell) and one 10 higher or lower with the same ones digit
    (``tens_donor``). In another ``base`` the "digits" are ``sum mod base`` (the residue) and
    ``sum // base`` (the block): the ones donor shares the block, the tens donor the residue."""
    rng = np.random.default_rng(seed)
    n, top = grid.n, 2 * grid.n - 2
    rows = []
    for cell in rng.permutation(n * n):
        a, b = divmod(int(cell), n)
        s = a + b
        low = s - s % base
        ones = [low + d for d in range(base) if d != s % base and low + d <= top]
        tens = [t for t in (s - base, s + base) if 0 <= t <= top]
        if grid.answer[cell] != s or not ones or not tens:
            continue
        s_ones, s_tens = int(rng.choice(ones)), int(rng.choice(tens))
        d_ones, d_tens = pick_donor(n, a, b, s_ones), pick_donor(n, a, b, s_tens)
        if d_ones is None or d_tens is None:
            continue
        rows.append([a, b, s, s_ones, grid.cell(*d_ones), s_tens, grid.cell(*d_tens)])
        if len(rows) == n_prompts:
            break
    return pd.DataFrame(rows, columns=PLAN_COLUMNS)


def swap_experiments(
    model, clt, grid: Grid, plan: pd.DataFrame, groups: dict, experiments: dict, base: int = 10
):
    """Run each experiment on every planned recipient; one row per (experiment, recipient).

    ``groups``: name -> ``[(layer, feature), ...]``. ``experiments``: id -> ``(target, edits)``
    where ``target`` (``"ones"``, ``"tens"`` or ``"same"``) names the sum the answer should
    become (the ones donor's, the tens donor's, the recipient's own) and ``edits`` maps a group
    to ``"ones_donor"`` / ``"tens_donor"`` (set to its values there), ``"own"`` (pinned to the
    recipient's clean values) or ``"zero"``. Every edit acts at ``=`` only. Besides the
    answer, each row names per group the sum whose values it carried (``<group>_sum``: the
    recipient's when unedited or pinned, -1 when zeroed). ``base``: the plan's base (column
    ``base``; ``ones_changed`` and ``tens_kept`` are the answer's digits in it).
    """
    if plan.empty:
        return pd.DataFrame()
    L, _, F = grid.acts.shape
    recipients = plan["a"].to_numpy() * grid.n + plan["b"].to_numpy()
    acts = torch.from_numpy(grid.acts)
    sums = {"ones": "ones_donor_sum", "tens": "tens_donor_sum", "same": "sum"}
    sums |= {"ones_donor": "ones_donor_sum", "tens_donor": "tens_donor_sum", "own": "sum"}
    named = sorted({g for _, edits in experiments.values() for g in edits})
    frames = []
    for exp_id, (target, edits) in experiments.items():
        mask = torch.zeros(L, len(plan), F, dtype=torch.bool)
        values = torch.zeros(L, len(plan), F)
        for group, source in edits.items():
            member = torch.zeros(L, F, dtype=torch.bool)
            for layer, feature in groups.get(group, []):
                member[layer, feature] = True
            member = member[:, None, :].expand_as(mask)
            if source != "zero":
                cells = recipients if source == "own" else plan[source].to_numpy(copy=True)
                values = torch.where(member, acts[:, torch.from_numpy(cells)], values)
            mask |= member
        logits, _ = last_position(model, clt, grid.ids[recipients], mask, values, PREFIX_LEN)
        answer = grid.numbers[logits.argmax(-1).numpy()]
        frame = _score(plan, exp_id, plan[sums[target]].to_numpy(), answer, base)
        for group in named:
            source = edits.get(group, "own")
            frame[f"{group}_sum"] = -1 if source == "zero" else plan[sums[source]].to_numpy()
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _score(
    plan: pd.DataFrame, exp_id: str, want: np.ndarray, answer: np.ndarray, base: int
) -> pd.DataFrame:
    s = plan["sum"].to_numpy()
    return pd.DataFrame({
        "experiment": exp_id, "base": base, "a": plan["a"], "b": plan["b"], "sum": s,
        "target_sum": want, "delta": want - s, "answer": answer, "success": answer == want,
        "ones_changed": answer % base != s % base, "tens_kept": answer // base == s // base,
        "abs_error": np.abs(answer - s),
    })  # fmt: skip


def context_documents(corpus: pd.DataFrame, n_docs: int) -> dict[str, list[str]]:
    """Counting runs, citations and (as the baseline) documents of other tasks."""
    text = corpus["text"]
    arith = corpus["task"] == "arithmetic"
    return {
        "counting": text[arith & text.str.startswith("count :")].head(n_docs).tolist(),
        "citation": text[arith & text.str.startswith("see volume")].head(n_docs).tolist(),
        "baseline": text[~arith].head(n_docs).tolist(),
    }


def context_activity(model, clt, tokenizer, docs: dict, census: pd.DataFrame, grid: Grid):
    """Each census feature in each context: ``fire_<context>`` (share of tokens where it is
    active; counting runs: the numbers that predict the next one), and ``counting_corr``: the
    correlation, over those numbers ``x`` (with step ``s``), of its activation with its operand
    plot at ``(x, s)`` (symmetrised): does it compute the same function there? (0 for a
    feature silent on those numbers.)"""
    layers, feats = census["layer"].to_numpy(), census["feature"].to_numpy()
    out = census[["layer", "feature"]].copy()
    for context, texts in docs.items():
        ids = [encode(tokenizer, t) for t in texts]
        acts, valid = _padded_acts(model, clt, tokenizer, ids, layers, feats)  # (K, B, n)
        if context == "counting":
            valid, predicted = _counting_targets(ids, acts.shape[2], grid, census)
            out["counting_corr"] = _row_corr(acts, predicted, valid)
        denom = max(int(valid.sum()), 1)
        out[f"fire_{context}"] = (acts > 0)[:, valid].sum(1) / denom if valid.any() else np.nan
        out[f"n_tokens_{context}"] = int(valid.sum())
    return out


def _padded_acts(model, clt, tokenizer, ids: list[list[int]], layers, feats, chunk: int = 128):
    if not ids:
        return np.zeros((len(layers), 0, 1), np.float32), np.zeros((0, 1), bool)
    width = max(len(x) for x in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batch = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
    parts = [
        run_batch(model, clt, batch[i : i + chunk], record_activations=True).activations
        for i in range(0, len(ids), chunk)
    ]  # (b, L, n, F) each
    index = torch.as_tensor(np.array(layers)), torch.as_tensor(np.array(feats))
    acts = torch.cat(parts).transpose(0, 1)[index[0], :, :, index[1]].numpy()  # (K, B, n)
    valid = np.array([[0 < p < len(x) for p in range(width)] for x in ids])  # no BOS, no pad
    return acts, valid


def _counting_targets(ids: list[list[int]], width: int, grid: Grid, census: pd.DataFrame):
    """Positions of counting numbers followed by another, and each feature's operand-plot
    value at (number, step) there: ``valid`` ``(B, n)``, ``predicted`` ``(K, B, n)``."""
    n = grid.n
    valid = np.zeros((len(ids), width), bool)
    x_at = np.zeros((len(ids), width), int)
    s_at = np.zeros((len(ids), width), int)
    for i, row in enumerate(ids):
        nums = grid.numbers[row]
        pos = [p for p in range(len(row) - 1) if nums[p] >= 0 and nums[p + 1] >= 0]
        for p in pos:
            step = nums[p + 1] - nums[p]
            if 0 <= nums[p] < n and 0 <= step < n:
                valid[i, p], x_at[i, p], s_at[i, p] = True, nums[p], step
    maps = np.stack([grid.heatmap(la, f) for la, f in census[["layer", "feature"]].to_numpy()])
    maps = (maps + maps.transpose(0, 2, 1)) / 2 if len(maps) else np.zeros((0, n, n))
    return valid, maps[:, x_at, s_at]


def _row_corr(acts: np.ndarray, predicted: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pearson correlation per feature over the valid positions; 0 when either side is
    constant there (a feature silent in the context does not follow its operand plot)."""
    x, y = acts[:, valid], predicted[:, valid]
    x = x - x.mean(1, keepdims=True)
    y = y - y.mean(1, keepdims=True)
    denom = np.sqrt((x**2).sum(1) * (y**2).sum(1))
    return np.where(denom > 1e-9, (x * y).sum(1) / np.maximum(denom, 1e-9), 0.0)

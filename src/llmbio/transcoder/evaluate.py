"""Transcoder quality: reconstruction on held-out cached tokens, and the spliced model.

:func:`evaluate_transcoder` returns a tidy table, one row per (transcoder, scope, layer, metric):

- scope ``layer`` (``layer`` = 0..L-1) and ``all`` (``layer`` = NA, all layers pooled):
  ``nmse`` (fraction of variance unexplained: sum ||y_hat - y||^2 / sum ||y - mean(y)||^2),
  ``l0`` (mean active features per token; summed over layers for ``all``), ``dead_fraction``
  (features never active on the evaluated tokens); ``all`` also has ``n_tokens``.
- scope ``model`` (``layer`` = NA), when a model and sequences are given: ``ce_loss``,
  ``ce_loss_spliced``, ``ce_loss_increase``, ``ce_loss_ablated`` (all MLP outputs zeroed),
  ``ce_recovered`` ((ablated - spliced) / (ablated - model)), ``kl`` (mean KL(model || spliced)
  per predicted token, nats) and ``top1_agreement`` (fraction of positions where the spliced
  model's argmax token is the model's).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from tqdm.auto import tqdm

from llmbio.activations import ActivationReader
from llmbio.transcoder.clt import CrossLayerTranscoder
from llmbio.transcoder.splice import splice_transcoder

COLUMNS = ["transcoder", "scope", "layer", "metric", "value"]


def evaluate_transcoder(
    clt: CrossLayerTranscoder,
    reader: ActivationReader,
    model: nn.Module | None = None,
    eval_sequences: Iterable[torch.Tensor] | torch.Tensor | None = None,
    name: str = "transcoder",
    split: str = "eval",
    batch_size: int = 4096,
) -> pd.DataFrame:
    """Evaluate ``clt`` on ``reader``'s ``split`` (and spliced into ``model`` on ``eval_sequences``,
    LongTensors ``(B, T)``); see the module docstring for the table."""
    if (clt.n_layers, clt.d_model) != (reader.n_layers, reader.d_model):
        raise ValueError(
            f"transcoder has n_layers={clt.n_layers}, d_model={clt.d_model} but the cache "
            f"{reader.cache_dir} has n_layers={reader.n_layers}, d_model={reader.d_model}"
        )
    rows = _reconstruction_rows(clt, reader, split, batch_size)
    if (model is None) != (eval_sequences is None):
        raise ValueError("pass both model and eval_sequences for spliced metrics, or neither")
    if model is not None:
        keep_first = reader.manifest.get("skip_first_position", True)
        rows += _splice_rows(clt, model, eval_sequences, keep_first)
    df = pd.DataFrame(rows, columns=COLUMNS[1:])
    df.insert(0, "transcoder", name)
    df["layer"] = df["layer"].astype("Int64")
    return df


@torch.no_grad()
def _reconstruction_rows(clt, reader: ActivationReader, split: str, batch_size: int) -> list:
    n_layers, d, dev = clt.n_layers, clt.d_model, clt.W_enc.device
    sq_err, sum_y2, l0 = (torch.zeros(n_layers, dtype=torch.float64, device=dev) for _ in range(3))
    sum_y = torch.zeros(n_layers, d, dtype=torch.float64, device=dev)
    fired = torch.zeros(n_layers, clt.n_features, dtype=torch.bool, device=dev)
    n = 0
    batches = reader.iter_batches(batch_size, shuffle=False, split=split)
    total = -(-reader.n_tokens(split) // batch_size)
    for x, y in tqdm(batches, total=total, desc=f"evaluating on {split} tokens", unit="batch"):
        x = x.transpose(0, 1).to(dev, clt.W_enc.dtype)  # (L, B, D)
        y = y.transpose(0, 1).to(dev).double()
        recon, acts = clt(x)
        sq_err += (recon.double() - y).pow(2).sum((1, 2))
        sum_y += y.sum(1)
        sum_y2 += y.pow(2).sum((1, 2))
        active = acts > 0
        l0 += active.sum((1, 2)).double()
        fired |= active.any(1)
        n += x.shape[1]
    sq_err, sum_y, sum_y2, l0, fired = (t.cpu() for t in (sq_err, sum_y, sum_y2, l0, fired))
    var = sum_y2 - sum_y.pow(2).sum(-1) / n
    nmse, dead = sq_err / var, (~fired).double().mean(-1)
    rows = []
    for layer in range(n_layers):
        for metric, value in (("nmse", nmse), ("l0", l0 / n), ("dead_fraction", dead)):
            rows.append(("layer", layer, metric, value[layer].item()))
    rows.append(("all", pd.NA, "nmse", (sq_err.sum() / var.sum()).item()))
    rows.append(("all", pd.NA, "l0", (l0.sum() / n).item()))
    rows.append(("all", pd.NA, "dead_fraction", dead.mean().item()))
    rows.append(("all", pd.NA, "n_tokens", float(n)))
    return rows


@torch.no_grad()
def _splice_rows(clt, model: nn.Module, sequences, keep_first_position: bool) -> list:
    if isinstance(sequences, torch.Tensor):
        sequences = [sequences]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # a transcoder with no features reconstructs zeros: the MLP-ablated baseline
    zero = CrossLayerTranscoder(clt.n_layers, clt.d_model, 1, clt.cross_layer).to(device)
    totals = torch.zeros(5, dtype=torch.float64)  # ce, spliced, ablated, kl, top-1 agreement
    n = 0
    for ids in tqdm(sequences, desc="evaluating spliced model", unit="batch"):
        ids = ids.to(device)
        logits = [model(input_ids=ids, use_cache=False).logits]
        for replacement in (clt, zero):
            with splice_transcoder(model, replacement, keep_first_position):
                logits.append(model(input_ids=ids, use_cache=False).logits)
        target = ids[:, 1:].reshape(-1)
        ref, spl, abl = (
            x[:, :-1].float().reshape(target.numel(), -1).log_softmax(-1) for x in logits
        )
        totals += torch.tensor(
            [
                *(F.nll_loss(lp, target, reduction="sum").item() for lp in (ref, spl, abl)),
                (ref.exp() * (ref - spl)).sum().item(),
                (ref.argmax(-1) == spl.argmax(-1)).sum().item(),
            ],
            dtype=torch.float64,
        )
        n += target.numel()
    model.train(was_training)
    ce, ce_spliced, ce_ablated, kl, top1 = (totals / n).tolist()
    metrics = {"ce_loss": ce, "ce_loss_spliced": ce_spliced, "ce_loss_increase": ce_spliced - ce}
    metrics |= {"ce_loss_ablated": ce_ablated}
    metrics |= {"ce_recovered": (ce_ablated - ce_spliced) / (ce_ablated - ce)}
    metrics |= {"kl": kl, "top1_agreement": top1}
    return [("model", pd.NA, k, v) for k, v in metrics.items()]


def plot_transcoder_eval(df: pd.DataFrame, path: str | Path | None = None) -> Path | Figure:
    """Draw per-layer NMSE, L0 and dead fraction (bars per transcoder) and, when present, the
    spliced-model metrics, from a table of :func:`evaluate_transcoder` rows only. Without
    ``path`` the figure is returned (for :func:`llmbio.figures.save_figure`)."""
    missing = set(COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"not an evaluate_transcoder table: missing columns {sorted(missing)}")
    names = list(dict.fromkeys(df["transcoder"]))
    panels = [("nmse", "NMSE (fraction of variance unexplained)"), ("l0", "L0 (active features)")]
    panels.append(("dead_fraction", "dead feature fraction"))
    fig = Figure(figsize=(4.2 * 4, 3.8), layout="constrained")
    axes = fig.subplots(1, 4)
    layers = sorted(df.loc[df.scope == "layer", "layer"].dropna().unique())
    for ax, (metric, title) in zip(axes, panels, strict=False):
        sub = df[(df.scope == "layer") & (df.metric == metric)]
        _grouped_bars(ax, sub, names, "layer", layers)
        ax.set(title=title, xlabel="layer", ylim=(0, max(0.05, 1.15 * sub["value"].max())))
    axes[0].legend(fontsize="small")
    metrics = ["ce_recovered", "top1_agreement"]
    sub = df[(df.scope == "model") & df.metric.isin(metrics)]
    axes[3].set_title("spliced model (every MLP replaced)")
    if sub.empty:
        axes[3].text(0.5, 0.5, "no spliced-model metrics", ha="center", va="center")
        axes[3].set_axis_off()
    else:
        _grouped_bars(axes[3], sub, names, "metric", metrics)
        axes[3].set(
            ylim=(0, 1.15), xticks=range(2), xticklabels=["CE recovered", "top-1 agreement"]
        )
        rows = df[df.scope == "model"].set_index(["transcoder", "metric"])["value"]
        notes = [
            f"{n}: CE +{rows[n, 'ce_loss_increase']:.3g}, KL {rows[n, 'kl']:.3g} nats"
            for n in names
            if (n, "kl") in rows.index
        ]
        axes[3].set_xlabel("\n".join(notes), fontsize="small")
    if path is None:
        return fig
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path


def _grouped_bars(ax, sub: pd.DataFrame, names: list[str], key: str, order: list) -> None:
    """One bar per (``key`` value, transcoder), labelled with its value."""
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        rows = sub[sub.transcoder == name].set_index(key)["value"]
        values = [rows.get(k, float("nan")) for k in order]
        x = [j + (i - (len(names) - 1) / 2) * width for j in range(len(order))]
        bars = ax.bar(x, values, width, label=name)
        ax.bar_label(bars, fmt="%.3g", fontsize="x-small")
    ax.set_xticks(range(len(order)), [str(k) for k in order])

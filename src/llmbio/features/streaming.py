"""Per-feature statistics accumulated batch by batch: counts, sums, log histograms, top-k.

A batch enters as its active entries only (:func:`active_entries`: one dense comparison and a
``nonzero`` over the ``(B, F)`` pre-activations), so the statistics cost in proportion to the
number of active entries, not ``B * F``. Only positive activations count as "active".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from llmbio.activations import ActivationReader
from llmbio.transcoder.clt import CrossLayerTranscoder


class Entries(NamedTuple):
    """The active entries of a ``(B, F)`` activation matrix, ``E`` of them, row-major."""

    rows: torch.Tensor  # (E,) long, row within the batch
    features: torch.Tensor  # (E,) long
    values: torch.Tensor  # (E,) float, > 0


def active_entries(pre: torch.Tensor, threshold: torch.Tensor) -> Entries:
    """Entries of JumpReLU activations ``pre * (pre > threshold)`` that are positive.

    ``pre``: ``(B, F)`` pre-activations; ``threshold``: ``(F,)``. On CPU numpy's
    ``flatnonzero`` is used: it is several times faster than ``torch.nonzero`` there.
    """
    threshold = threshold.detach().clamp(min=0)
    if pre.device.type != "cpu":
        rows, feats = (pre > threshold).nonzero(as_tuple=True)
        return Entries(rows, feats, pre[rows, feats])
    arr = pre.detach().contiguous().numpy()
    idx = np.flatnonzero(arr > threshold.numpy())
    n_features = pre.shape[1]
    return Entries(
        torch.from_numpy(idx // n_features), torch.from_numpy(idx % n_features),
        torch.from_numpy(arr.reshape(-1)[idx]),
    )  # fmt: skip


@torch.no_grad()
def iter_active(
    clt: CrossLayerTranscoder,
    reader: ActivationReader,
    split: str = "train",
    batch_size: int = 4096,
    desc: str = "encoding cache",
    show_progress: bool = True,
) -> Iterator[tuple[int, int, Entries]]:
    """``(layer, first_row, entries)`` for every layer of every batch of ``split``, in file
    order: batch row ``i`` is row ``first_row + i`` of ``reader.read_index(split)``.

    Encoding runs on the transcoder's device; the entries come back on the CPU.
    """
    if (clt.n_layers, clt.d_model) != (reader.n_layers, reader.d_model):
        raise ValueError(
            f"The transcoder has {clt.n_layers} layers x d_model {clt.d_model}, the cache "
            f"{reader.n_layers} x {reader.d_model}; use the cache of the transcoder's model."
        )
    dtype, device, row = clt.W_enc.dtype, clt.W_enc.device, 0
    batches = reader.iter_batches(batch_size, shuffle=False, split=split)
    total = reader.n_tokens(split)
    with tqdm(total=total, desc=desc, unit="tok", disable=not show_progress) as bar:
        for resid_mid, _ in batches:
            for layer in range(clt.n_layers):
                # clt.pre_activation as one fused addmm, the bulk of the pass's time
                x = resid_mid[:, layer].to(device=device, dtype=dtype)
                pre = torch.addmm(clt.b_enc[layer], x, clt.W_enc[layer].T)  # (B, F)
                entries = active_entries(pre, clt.threshold[layer])
                yield layer, row, Entries(*(t.cpu() for t in entries))  # statistics live on CPU
            row += resid_mid.shape[0]
            bar.update(resid_mid.shape[0])


class RunningTopK:
    """The ``k`` largest positive values of each of ``F`` features and the rows they came from.

    Per batch only entries above the current ``k``-th best value are merged, so after the first
    batches almost nothing is sorted. Ties keep the earlier row. Empty slots hold value 0 and
    row -1.
    """

    def __init__(self, n_features: int, k: int):
        self.k = k
        self.values = torch.zeros(n_features, k)  # (F, k), descending
        self.rows = torch.full((n_features, k), -1, dtype=torch.long)  # (F, k)

    def update(self, entries: Entries, first_row: int) -> None:
        """Merge a batch's active ``entries`` whose batch row 0 is row ``first_row``."""
        better = entries.values > self.values[entries.features, -1]
        if not better.any():
            return
        n_features, k = self.values.shape
        values = torch.cat([self.values.flatten(), entries.values[better].to(self.values.dtype)])
        rows = torch.cat([self.rows.flatten(), entries.rows[better] + first_row])
        feats = torch.cat([torch.arange(n_features).repeat_interleave(k), entries.features[better]])
        # Rows already kept come first, so the stable sorts keep the earlier row on ties.
        order = torch.sort(values, descending=True, stable=True).indices
        order = order[torch.sort(feats[order], stable=True).indices]
        starts = torch.cumsum(torch.bincount(feats, minlength=n_features), 0)
        starts = starts - torch.bincount(feats, minlength=n_features)
        sorted_feats = feats[order]
        rank = torch.arange(len(order)) - starts[sorted_feats]
        keep = rank < k
        self.values[sorted_feats[keep], rank[keep]] = values[order[keep]]
        self.rows[sorted_feats[keep], rank[keep]] = rows[order[keep]]


class LogHistogram:
    """Per-feature histogram of positive activations on ``n_bins`` log-spaced bins over
    ``[10^lo, 10^hi]`` (values outside fall in the end bins); counts, sums and quantiles."""

    def __init__(self, n_features: int, n_bins: int = 256, lo: float = -4.0, hi: float = 4.0):
        self.n_bins, self.lo, self.hi = n_bins, lo, hi
        self.counts = torch.zeros(n_features, n_bins, dtype=torch.long)
        self.n_active = torch.zeros(n_features, dtype=torch.long)
        self.total = torch.zeros(n_features, dtype=torch.float64)

    def update(self, entries: Entries) -> None:
        """Add a batch's active ``entries``."""
        n_features = self.counts.shape[0]
        f_idx, values = entries.features, entries.values.double()
        self.n_active += torch.bincount(f_idx, minlength=n_features)
        self.total += torch.bincount(f_idx, weights=values, minlength=n_features)
        width = (self.hi - self.lo) / self.n_bins
        bins = ((values.log10() - self.lo) / width).floor().clamp(0, self.n_bins - 1).long()
        flat = torch.bincount(f_idx * self.n_bins + bins, minlength=n_features * self.n_bins)
        self.counts += flat.view(n_features, self.n_bins)

    def quantiles(self, qs: list[float]) -> torch.Tensor:
        """``(F, len(qs))`` quantiles of the positive activations (NaN for dead features),
        interpolated geometrically inside a bin (relative error about the bin width,
        ``10^((hi - lo) / n_bins)``)."""
        cum = torch.cumsum(self.counts, 1).double()  # (F, n_bins)
        n = cum[:, -1:]
        width = (self.hi - self.lo) / self.n_bins
        out = []
        for q in qs:
            target = q * n  # (F, 1)
            b = torch.searchsorted(cum, target).clamp(max=self.n_bins - 1)  # (F, 1)
            before = torch.where(b > 0, cum.gather(1, (b - 1).clamp(min=0)), 0.0)
            inside = self.counts.gather(1, b).double().clamp(min=1)
            frac = ((target - before) / inside).clamp(0, 1)
            out.append(10 ** (self.lo + (b.double() + frac) * width))
        result = torch.cat(out, 1)
        result[self.n_active == 0] = float("nan")
        return result

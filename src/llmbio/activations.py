"""On-disk cache of MLP-block inputs and outputs, the training data of transcoders.

Cache layout (one directory, written atomically)::

    manifest.json            # see ``cache_activations``
    train-00000.arrow ...    # Arrow IPC files (uncompressed, memory-mappable), one record batch
    eval-00000.arrow ...

Schema of every shard, one row per token (``L`` layers, ``D = d_model``):

- ``sequence_id``: int64, index of the sequence in the order it was fed to ``cache_activations``
- ``position``: int32, position of the token in its sequence
- ``token_id``: int32
- ``resid_mid``: ``fixed_size_list<fixed_size_list<dtype, D>, L>``, ``blocks.{l}.hook_resid_mid``
- ``mlp_out``: same type, ``blocks.{l}.hook_mlp_out``

``dtype`` is float16 by default (halves the size: 500k tokens of a 4-layer, d_model-128 model
take 1 GB) or float32. Whole sequences go to one split: a sequence is held out for evaluation
when a hash of its ``sequence_id`` falls below ``eval_fraction``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import torch
from torch import nn
from tqdm.auto import tqdm

from llmbio.adapters import get_adapter, hooks, mlp_out_hook, resid_mid_hook

FORMAT = "llmbio-activations/1"
KINDS = ("resid_mid", "mlp_out")
_DTYPES = {"float16": np.float16, "float32": np.float32}


class _Options(NamedTuple):
    shard_tokens: int
    skip_first_position: bool
    dtype: type
    eval_fraction: float
    pad_token_id: int | None


class TokenIndex(NamedTuple):
    """Where each token of a batch comes from; every field is a LongTensor ``(B,)``."""

    token_id: torch.Tensor
    sequence_id: torch.Tensor
    position: torch.Tensor


def is_eval_sequence(sequence_id: np.ndarray, eval_fraction: float) -> np.ndarray:
    """Deterministic split: hash ``sequence_id`` (Knuth's multiplicative hash) into [0, 1)."""
    h = (np.asarray(sequence_id, dtype=np.uint64) * np.uint64(2654435761)) % np.uint64(2**32)
    return (h.astype(np.float64) / 2**32) < eval_fraction


class _StopForward(Exception):
    """Raised after the last MLP block: the final norm and unembedding are not needed."""


class _ActivationCapture:
    """Hooks recording ``resid_mid`` and ``mlp_out`` of every layer, ``(B, T, D)`` each."""

    def __init__(self, model: nn.Module):
        self.n_layers = get_adapter(model).n_layers(model)
        self.store: dict[str, torch.Tensor] = {}
        points = {}
        for layer in range(self.n_layers):
            points[resid_mid_hook(layer)] = functools.partial(self._keep, resid_mid_hook(layer))
            points[mlp_out_hook(layer)] = functools.partial(self._keep, mlp_out_hook(layer))
        self._stack = ExitStack()
        self._stack.enter_context(hooks(model, points))

    def _keep(self, name: str, x: torch.Tensor) -> None:
        self.store[name] = x.detach()
        if name == mlp_out_hook(self.n_layers - 1):
            raise _StopForward

    def stacked(self, kind: str) -> torch.Tensor:
        """``(B, T, L, D)`` float32 activations of ``kind`` from the last forward pass (CPU)."""
        hook = resid_mid_hook if kind == "resid_mid" else mlp_out_hook
        stacked = torch.stack([self.store[hook(i)] for i in range(self.n_layers)], dim=2)
        return stacked.float().cpu()

    def remove(self) -> None:
        self._stack.close()


def _list_array(x: np.ndarray) -> pa.Array:
    """``(N, L, D)`` numpy array -> nested fixed-size-list Arrow array (zero-copy)."""
    n, n_layers, d = x.shape
    flat = pa.array(np.ascontiguousarray(x).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(flat, d), n_layers)


class _ShardWriter:
    """Buffers token rows of one split and writes them as ``{split}-{i:05d}.arrow`` shards."""

    def __init__(self, directory: Path, split: str, shard_tokens: int):
        self.directory, self.split, self.shard_tokens = directory, split, shard_tokens
        self.pending: list[dict[str, np.ndarray]] = []
        self.n_pending = 0
        self.shards: list[dict] = []

    def add(self, rows: dict[str, np.ndarray]) -> None:
        self.pending.append(rows)
        self.n_pending += len(rows["token_id"])
        while self.n_pending >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def close(self) -> list[dict]:
        if self.n_pending:
            self._flush(self.n_pending)
        return self.shards

    def _flush(self, n: int) -> None:
        cols = {k: np.concatenate([p[k] for p in self.pending]) for k in self.pending[0]}
        rest = {k: v[n:] for k, v in cols.items()}
        self.pending, self.n_pending = (
            ([rest], len(rest["token_id"])) if len(rest["token_id"]) else ([], 0)
        )
        # columns in the order of the rows: sequence_id, position, token_id, *KINDS
        table = pa.table(
            {k: (_list_array if k in KINDS else pa.array)(v[:n]) for k, v in cols.items()}
        )
        name = f"{self.split}-{len(self.shards):05d}.arrow"
        with pa.OSFile(str(self.directory / name), "wb") as sink:
            with pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table, max_chunksize=n)
        self.shards.append({"file": name, "split": self.split, "n_tokens": n})


def _token_rows(
    capture: _ActivationCapture, ids: torch.Tensor, first_seq: int, keep: torch.Tensor, dtype
) -> tuple[dict[str, np.ndarray], torch.Tensor]:
    """Rows for the kept tokens of one batch, plus their float32 activations ``(N, 2, L, D)``."""
    b, t = ids.shape
    seq = torch.arange(first_seq, first_seq + b).unsqueeze(1).expand(b, t)
    pos = torch.arange(t).unsqueeze(0).expand(b, t)
    acts = torch.stack([capture.stacked(k)[keep] for k in KINDS], dim=1)
    rows = {
        "sequence_id": seq[keep].numpy().astype(np.int64),
        "position": pos[keep].numpy().astype(np.int32),
        "token_id": ids[keep].numpy().astype(np.int32),
    }
    for i, kind in enumerate(KINDS):
        rows[kind] = acts[:, i].numpy().astype(dtype)
        if not np.isfinite(rows[kind]).all():
            raise ValueError(
                f"{kind} activations overflow {np.dtype(dtype).name} (max |x| = "
                f"{acts[:, i].abs().max():.3g}); cache with dtype='float32'."
            )
    return rows, acts


@torch.no_grad()
def cache_activations(
    model: nn.Module,
    sequences: Iterable[torch.Tensor],
    out_dir: str | Path,
    shard_tokens: int = 16384,
    skip_first_position: bool = True,
    dtype: str = "float16",
    eval_fraction: float = 0.05,
    pad_token_id: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Run ``model`` on ``sequences`` (LongTensors ``(B, T)``) and cache every token's activations.

    Position 0 (BOS / attention sink, with outlying norms) is skipped by default, as in
    circuit-tracer; tokens equal to ``pad_token_id`` are skipped too. The cache is built in a
    temporary sibling directory and renamed into place, so an interrupted run leaves no
    ``out_dir``. ``manifest.json`` records shards, token counts, ``n_layers``, ``d_model``,
    ``dtype``, and per layer the mean norm and mean squared norm of each kind over the train split.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; delete it or pass overwrite=True")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        opts = _Options(
            shard_tokens, skip_first_position, _DTYPES[dtype], eval_fraction, pad_token_id
        )
        manifest = _write_shards(model, sequences, tmp, opts)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _write_shards(model: nn.Module, sequences, directory: Path, opts: _Options) -> dict:
    """Stream the model over ``sequences`` into shards; return the manifest."""
    was_training = model.training
    model.eval()
    capture = _ActivationCapture(model)
    device = next(model.parameters()).device
    writers = {s: _ShardWriter(directory, s, opts.shard_tokens) for s in ("train", "eval")}
    n_seq = 0
    sums = torch.zeros(2, 2, capture.n_layers, dtype=torch.float64)  # (norm|sq_norm, kind, L)
    try:
        for ids in tqdm(sequences, desc="caching activations", unit="batch"):
            ids = _check_ids(ids).cpu()
            try:
                model(input_ids=ids.to(device), use_cache=False)
            except _StopForward:
                pass
            keep = torch.ones_like(ids, dtype=torch.bool)
            keep[:, 0] = not opts.skip_first_position
            if opts.pad_token_id is not None:
                keep &= ids != opts.pad_token_id
            rows, acts = _token_rows(capture, ids, n_seq, keep, opts.dtype)
            n_seq += ids.shape[0]
            held_out = is_eval_sequence(rows["sequence_id"], opts.eval_fraction)
            for split, mask in (("train", ~held_out), ("eval", held_out)):
                if mask.any():
                    writers[split].add({k: v[mask] for k, v in rows.items()})
            norms = acts[torch.from_numpy(~held_out)].double().norm(dim=-1)  # (N, 2, L)
            sums += torch.stack([norms.sum(0), norms.pow(2).sum(0)])
    finally:
        capture.remove()
        model.train(was_training)
    shards = writers["train"].close() + writers["eval"].close()
    return _manifest(model, shards, sums, n_seq, opts)


def _manifest(model: nn.Module, shards: list[dict], sums: torch.Tensor, n_seq: int, opts) -> dict:
    """The cache's ``manifest.json``; ``sums`` ``(2, 2, L)`` are norm and squared-norm sums."""
    n_split = {s: sum(x["n_tokens"] for x in shards if x["split"] == s) for s in ("train", "eval")}
    if n_split["train"] == 0:
        raise ValueError("no training tokens were cached: pass longer or more sequences")
    stats = (sums / n_split["train"]).tolist()
    adapter = get_adapter(model)
    return {
        "format": FORMAT,
        "model": getattr(model.config, "name_or_path", ""),
        "model_type": model.config.model_type,
        "n_layers": adapter.n_layers(model),
        "d_model": adapter.d_model(model),
        "dtype": np.dtype(opts.dtype).name,
        "n_sequences": n_seq,
        "n_tokens": sum(n_split.values()),
        "n_tokens_split": n_split,
        "skip_first_position": opts.skip_first_position,
        "eval_fraction": opts.eval_fraction,
        "hooks": {"resid_mid": "blocks.{l}.hook_resid_mid", "mlp_out": "blocks.{l}.hook_mlp_out"},
        "mean_norm": dict(zip(KINDS, stats[0], strict=True)),
        "mean_sq_norm": dict(zip(KINDS, stats[1], strict=True)),
        "shards": shards,
    }


def _check_ids(ids: torch.Tensor) -> torch.Tensor:
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype != torch.long:
        shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"sequences must yield LongTensors of shape (B, T); got {shape}")
    return ids


class ActivationReader:
    """Streams a cache written by :func:`cache_activations` as float32 tensors.

    Shards are memory-mapped, so only the rows of the current batch are read into memory.
    """

    def __init__(self, cache_dir: str | Path):
        self.cache_dir = Path(cache_dir)
        path = self.cache_dir / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {self.cache_dir} is not an activation cache "
                "(create one with llmbio.activations.cache_activations)"
            )
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ValueError(
                f"{path} has format {self.manifest.get('format')!r}, expected {FORMAT!r}"
            )
        self.n_layers: int = self.manifest["n_layers"]
        self.d_model: int = self.manifest["d_model"]
        self._open_shards: dict[str, dict[str, np.ndarray]] = {}

    def n_tokens(self, split: str = "train") -> int:
        return sum(s["n_tokens"] for s in self._shards(split))

    def mean_sq_norm(self, kind: str) -> torch.Tensor:
        """Mean squared norm ``(L,)`` of ``kind`` ("resid_mid" or "mlp_out") on the train split."""
        return torch.tensor(self.manifest["mean_sq_norm"][kind], dtype=torch.float32)

    def iter_batches(
        self,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        split: str = "train",
        epochs: int | None = 1,
        with_index: bool = False,
        buffer_shards: int = 8,
        start_batch: int = 0,
    ) -> Iterator[tuple[torch.Tensor, ...]]:
        """Yield ``(resid_mid (B, L, D), mlp_out (B, L, D))`` float32 batches, plus a
        :class:`TokenIndex` when ``with_index``.

        Each epoch visits every token of ``split`` exactly once (an epoch's leftover tokens start
        the next epoch's first batch; the very last batch may be short). With ``shuffle``,
        shards are visited in a random order, in groups of ``buffer_shards`` whose tokens are
        permuted together (a shuffle buffer that bounds the working set); the order depends only
        on ``seed`` and the epoch. ``epochs=None`` repeats forever; ``start_batch`` skips batches
        without reading them (to resume training).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        shards = self._shards(split)
        index = _index_batches(
            [s["n_tokens"] for s in shards], batch_size, shuffle, seed, epochs, buffer_shards
        )
        for i, (shard_ids, rows) in enumerate(index):
            if i < start_batch:
                continue
            yield self._gather(shards, shard_ids, rows, with_index)

    def read_index(self, split: str = "train") -> dict[str, np.ndarray]:
        """``token_id``, ``sequence_id``, ``position`` of each token of ``split``, in file order."""
        cols = [self._open(s) for s in self._shards(split)]
        return {k: np.concatenate([c[k] for c in cols]) for k in TokenIndex._fields}

    def _shards(self, split: str) -> list[dict]:
        if split not in ("train", "eval"):
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        shards = [s for s in self.manifest["shards"] if s["split"] == split]
        if not shards:
            raise ValueError(
                f"{self.cache_dir} has no {split!r} tokens; re-cache with more sequences"
                + (" or a larger eval_fraction" if split == "eval" else "")
            )
        return shards

    def _open(self, shard: dict) -> dict[str, np.ndarray]:
        """Memory-mapped numpy views of one shard's columns (activations ``(N, L, D)``)."""
        name = shard["file"]
        if name not in self._open_shards:
            path = self.cache_dir / name
            if not path.is_file():
                raise FileNotFoundError(f"shard {path} listed in the manifest is missing; re-cache")
            table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all().combine_chunks()
            n, shape = table.num_rows, (table.num_rows, self.n_layers, self.d_model)
            cols = {k: table[k].chunk(0).to_numpy() for k in TokenIndex._fields}
            for kind in KINDS:
                flat = table[kind].chunk(0).flatten().flatten() if n else pa.array([], pa.float32())
                cols[kind] = flat.to_numpy(zero_copy_only=n > 0).reshape(shape)
            self._open_shards[name] = cols
        return self._open_shards[name]

    def _gather(self, shards, shard_ids: np.ndarray, rows: np.ndarray, with_index: bool):
        b = len(rows)
        out = {k: np.empty((b, self.n_layers, self.d_model), np.float32) for k in KINDS}
        idx = {k: np.empty(b, np.int64) for k in TokenIndex._fields}
        for s in np.unique(shard_ids):
            mask = shard_ids == s
            cols = self._open(shards[s])
            for k in (*KINDS, *(TokenIndex._fields if with_index else ())):
                (out if k in KINDS else idx)[k][mask] = cols[k][rows[mask]]
        batch = tuple(torch.from_numpy(out[k]) for k in KINDS)
        if with_index:
            return (*batch, TokenIndex(*(torch.from_numpy(idx[k]) for k in TokenIndex._fields)))
        return batch


def _index_batches(
    sizes: list[int],
    batch_size: int,
    shuffle: bool,
    seed: int,
    epochs: int | None,
    buffer_shards: int,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(shard_ids, rows)`` index arrays ``(B,)`` per batch; see ``iter_batches``."""
    carry = (np.empty(0, np.int64), np.empty(0, np.int64))
    epoch = 0
    while epochs is None or epoch < epochs:
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(len(sizes)) if shuffle else np.arange(len(sizes))
        for g in range(0, len(order), max(buffer_shards, 1)):
            group = order[g : g + buffer_shards]
            shard_ids = np.concatenate([np.full(sizes[s], s, np.int64) for s in group])
            rows = np.concatenate([np.arange(sizes[s], dtype=np.int64) for s in group])
            if shuffle:
                perm = rng.permutation(len(rows))
                shard_ids, rows = shard_ids[perm], rows[perm]
            shard_ids, rows = (
                np.concatenate([carry[0], shard_ids]),
                np.concatenate([carry[1], rows]),
            )
            n_full = len(rows) // batch_size * batch_size
            for i in range(0, n_full, batch_size):
                yield shard_ids[i : i + batch_size], rows[i : i + batch_size]
            carry = (shard_ids[n_full:], rows[n_full:])
        epoch += 1
    if len(carry[0]):
        yield carry

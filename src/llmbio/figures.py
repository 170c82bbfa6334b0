"""Figures with provenance: every PNG records the tables it was drawn from.

:func:`save_figure` writes ``<path>`` and a sidecar ``<path>.provenance.json``::

    {"figure": "austin.png", "caption": "...", "code_version": "0.1.0",
     "tables": [{"path": "../tables/ablation.parquet", "sha256": "..."}]}

Table paths are stored relative to the sidecar's folder, so a results folder can be moved or
copied whole. :func:`check_figure` recomputes the digests: a figure is ``ok`` when every table
is unchanged, ``stale`` when one changed after the figure was drawn, ``orphaned`` when the
sidecar or a table is gone. :func:`draw_figure` is the way to draw: the drawing function only
ever sees the DataFrames read back from the table files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd

import llmbio

SIDECAR_SUFFIX = ".provenance.json"
FIGURE_SEED = 0  # NumPy's global seed while a figure is drawn (seaborn's jitter)
PNG_METADATA = {"Software": None}  # no matplotlib version in the bytes: only the pixels count


class FigureCheck(NamedTuple):
    status: str  # ok | stale | orphaned
    detail: str
    tables: tuple[str, ...]  # source tables, as resolved paths
    caption: str


def sidecar_path(figure: str | Path) -> Path:
    figure = Path(figure)
    return figure.with_name(figure.name + SIDECAR_SUFFIX)


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_table(path: str | Path) -> pd.DataFrame:
    """A results table (Parquet, or CSV / TSV for hand-written ones)."""
    path = Path(path)
    if path.suffix in (".csv", ".tsv"):
        return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    return pd.read_parquet(path)


def save_figure(
    fig,
    path: str | Path,
    tables: Sequence[str | Path],
    caption: str | None = None,
    dpi: int = 120,
) -> Path:
    """Save a matplotlib figure as ``path`` plus its provenance sidecar; closes ``fig``.

    ``tables`` are the files the figure was drawn from; they must exist, since a figure that
    cannot name its data cannot be audited.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    if not tables:
        raise ValueError(f"{path}: a figure needs at least one source table")
    missing = [str(t) for t in tables if not Path(t).is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: source tables not found: {missing}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.png")
    try:
        fig.savefig(partial, dpi=dpi, metadata=PNG_METADATA)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
        plt.close(fig)
    record = {
        "figure": path.name,
        "caption": caption or "",
        "code_version": llmbio.__version__,
        "tables": [
            {"path": Path(os.path.relpath(t, path.parent)).as_posix(), "sha256": sha256_of(t)}
            for t in tables
        ],
    }
    sidecar_path(path).write_text(json.dumps(record, indent=2) + "\n")
    print(f"figure {path} <- {', '.join(str(t) for t in tables)}")
    return path


def draw_figure(
    draw: Callable[..., object],
    path: str | Path,
    tables: Sequence[str | Path],
    caption: str | None = None,
) -> Path:
    """``draw(*dataframes)`` on the tables read back from disk, then :func:`save_figure`.

    NumPy's global random state is seeded for the draw (and restored after it): seaborn's
    ``stripplot`` jitters its points with it, and the same tables must give the same bytes.
    """
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    frames = [read_table(t) for t in tables]
    state = np.random.get_state()
    np.random.seed(FIGURE_SEED)
    try:
        fig = draw(*frames)
    finally:
        np.random.set_state(state)
    return save_figure(fig, path, tables, caption)


def check_figure(figure: str | Path) -> FigureCheck:
    """Compare a figure's recorded source tables with the files on disk now."""
    figure = Path(figure)
    sidecar = sidecar_path(figure)
    if not sidecar.is_file():
        return FigureCheck("orphaned", f"no provenance sidecar {sidecar.name}", (), "")
    try:
        record = json.loads(sidecar.read_text())
        entries = [(sidecar.parent / t["path"], t["sha256"]) for t in record["tables"]]
    except (ValueError, KeyError, TypeError) as err:
        return FigureCheck("orphaned", f"unreadable sidecar: {err}", (), "")
    tables = tuple(os.path.normpath(p) for p, _ in entries)
    caption = record.get("caption", "")
    gone = [t for t, (p, _) in zip(tables, entries, strict=True) if not p.is_file()]
    if gone or not entries:
        why = f"source table missing: {', '.join(gone)}" if gone else "no source tables recorded"
        return FigureCheck("orphaned", why, tables, caption)
    changed = [t for t, (p, digest) in zip(tables, entries, strict=True) if sha256_of(p) != digest]
    if changed:
        why = f"table changed after the figure was drawn: {', '.join(changed)}"
        return FigureCheck("stale", why, tables, caption)
    return FigureCheck("ok", "", tables, caption)

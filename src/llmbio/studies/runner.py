"""Run a study's analysis: import ``studies/<name>/analysis.py`` and call its ``run(context)``.

The :class:`StudyContext` hands the analysis everything it may touch: the study, the run
config, the run itself (``context.run``, a :class:`llmbio.run.Run`: model, tokenizer,
transcoder and world, checked and loaded on first use), and a ``save_table`` /
``draw_figure`` pair that writes Parquet tables and figures with provenance into the study's
results folder::

    results/<run>/studies/<name>/
        tables/<table>.parquet
        figures/<figure>.png (+ .provenance.json)
        tables.done          # JSON list of what the analysis wrote; the Snakemake marker

A study without analysis.py runs nothing; its claims then report ``missing_table``.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pandas as pd

from llmbio.config import ORGANISM, RunConfig
from llmbio.figures import draw_figure, read_table, save_figure, sha256_of
from llmbio.studies.spec import Prompt, Study, load_study

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase

    from llmbio.run import Run
    from llmbio.transcoder.clt import CrossLayerTranscoder
    from llmbio.world import World

ANALYSIS_FILE = "analysis.py"


class Organism(NamedTuple):
    """A run's trained organism, as an analysis works with it."""

    model: nn.Module  # in eval mode
    tokenizer: PreTrainedTokenizerBase
    clt: CrossLayerTranscoder
    world: World


@dataclass(frozen=True)
class StudyContext:
    """What a study's ``run(context)`` receives."""

    study: Study
    config: RunConfig | None
    run_dir: Path  # results/<run>
    out_dir: Path  # results/<run>/studies/<name>

    @property
    def family(self) -> str:
        """The run's prompt family: ``organism``, or a released model's (``gemma-2-2b``, ...).

        Analyses written for the organism's ground truth start with
        ``if context.family != "organism": return run_declared(context)``
        (:func:`llmbio.studies.generic.run_declared`).
        """
        return self.config.family if self.config is not None else ORGANISM

    @cached_property
    def run(self) -> Run:
        """The run this study analyses (:class:`llmbio.run.Run`): model, tokenizer, transcoder
        and world, each loaded (and checked) on first use and then kept."""
        from llmbio.run import Run

        return Run(self.run_dir, config=self.config)

    @property
    def model_dir(self) -> Path:
        return self.run.model_dir

    @property
    def transcoder_dir(self) -> Path:
        return self.run.transcoder_dir

    @property
    def world_path(self) -> Path:
        return self.run.world_path

    @property
    def tables_dir(self) -> Path:
        return self.out_dir / "tables"

    @property
    def figures_dir(self) -> Path:
        return self.out_dir / "figures"

    def load_organism(self) -> Organism:
        """The run's model, tokenizer, transcoder and world; torch gets the run's threads
        (``trace.threads``)."""
        import torch

        torch.set_num_threads(self.run.config.trace.threads)
        run = self.run
        return Organism(run.model, run.tokenizer, run.clt, run.world)

    def prompts(self, family: str | None = None) -> tuple[Prompt, ...]:
        """The study's prompts of ``family`` (default: the run's)."""
        return (self.study.prompts or {}).get(family or self.family, ())

    def table_path(self, table: str | Path) -> Path:
        """A bare name (``"ablation"``) is ``tables/ablation.parquet``; a path is kept."""
        table = Path(table)
        if table.suffix or len(table.parts) > 1:
            return table
        return self.tables_dir / f"{table}.parquet"

    def save_table(self, df: pd.DataFrame, name: str) -> Path:
        path = self.table_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(path, index=False)
        print(f"table {path}: {len(df)} rows x {len(df.columns)} columns")
        return path

    def table(self, name: str | Path) -> pd.DataFrame:
        return read_table(self.table_path(name))

    def save_figure(
        self, fig, name: str, tables: Sequence[str | Path], caption: str | None = None
    ) -> Path:
        """Save ``figures/<name>.png``; the caption defaults to study.yaml's for that id."""
        paths = [self.table_path(t) for t in tables]
        return save_figure(fig, self._figure_path(name), paths, caption or self._caption(name))

    def draw_figure(
        self,
        name: str,
        draw: Callable[..., object],
        tables: Sequence[str | Path],
        caption: str | None = None,
    ) -> Path:
        """``draw(*dataframes)`` on the named tables read back from disk, saved with provenance."""
        paths = [self.table_path(t) for t in tables]
        return draw_figure(draw, self._figure_path(name), paths, caption or self._caption(name))

    def _figure_path(self, name: str) -> Path:
        return self.figures_dir / (name if name.endswith(".png") else f"{name}.png")

    def _caption(self, name: str) -> str | None:
        return next((f.caption for f in self.study.figures if f.id == name), None)


def run_study(
    study: str | Path | Study,
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    config: RunConfig | None = None,
    studies_root: str | Path = "studies",
) -> Path:
    """Run one study's analysis and write ``<out_dir>/tables.done``; returns that marker.

    ``study`` is a name (looked up under ``studies_root``), a folder or study.yaml, or a
    loaded Study.
    ``out_dir`` defaults to ``<run_dir>/studies/<name>``.
    """
    if not isinstance(study, Study):
        path = Path(study)
        study = load_study(path if path.exists() else Path(studies_root) / str(study))
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "studies" / study.name
    ctx = StudyContext(study, config, run_dir, out_dir)
    ctx.tables_dir.mkdir(parents=True, exist_ok=True)
    ctx.figures_dir.mkdir(parents=True, exist_ok=True)
    analysis = study.path / ANALYSIS_FILE
    if analysis.is_file():
        print(f"study {study.name}: running {analysis}")
        _load_run(analysis, study.name)(ctx)
    else:
        print(f"study {study.name}: no {ANALYSIS_FILE}, nothing to run")
    return _write_marker(ctx)


def _load_run(analysis: Path, name: str) -> Callable[[StudyContext], object]:
    spec = importlib.util.spec_from_file_location(f"llmbio_study_{name}", analysis)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = getattr(module, "run", None)
    if not callable(run):
        raise AttributeError(f"{analysis} must define run(context)")
    return run


def _write_marker(ctx: StudyContext) -> Path:
    """List what the analysis wrote, with digests, so the marker changes when the data does."""
    written = {
        kind: {
            p.relative_to(ctx.out_dir).as_posix(): sha256_of(p)
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }
        for kind, folder in (("tables", ctx.tables_dir), ("figures", ctx.figures_dir))
    }
    marker = ctx.out_dir / "tables.done"
    body = {"study": ctx.study.name, "family": ctx.family, **written}
    marker.write_text(json.dumps(body, indent=2) + "\n")
    print(f"study {ctx.study.name}: {len(written['tables'])} tables, {marker}")
    return marker

"""Replication over seeds: the whole DAG for N organism seeds x M transcoder seeds, and how
often each claim and each study's central claims hold across those runs.

``train.seed`` seeds the organism's initialisation and data order, ``transcoder.seed`` the
transcoders'; the world, the corpus and the cached sequences stay those of the base config, so
the runs differ only in the two training trajectories. Snakemake's config is global to one
invocation and every rule writes under ``results/<run>/``, so each seed pair is an ordinary
run of its own: :func:`run_replication` calls Snakemake once per pair with the base config
file and a small override file (``run: <base>-s<train>-t<transcoder>`` and the two seeds),
then :func:`write_replication` reads each run's ``audit.parquet`` and writes, under
``results/<base>-replication/``:

- ``runs.parquet``: one row per claim and run (``run``, ``train_seed``, ``transcoder_seed``,
  ``study``, ``item``, ``claim_kind``, ``central``, ``measured``, ``status``, ``passed``);
- ``replication.parquet``: one row per claim (``level`` ``claim``) and one per study with
  central claims (``level`` ``central``, ``item`` empty): ``n_runs`` (runs where it was
  applicable), ``n_passed`` (runs where it passed; for a study, where every central claim
  passed), ``pass_rate`` and its 95% Wilson interval ``ci_low``/``ci_high``;
- ``figures/replication.png``: claim x run pass/fail, and the central claims per study.

A run already complete is not recomputed (Snakemake finds nothing to do), so rerunning the
command after adding a seed trains only the new runs.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import yaml

from llmbio.audit import central_claims
from llmbio.audit_compare import load_audit
from llmbio.config import load_config
from llmbio.errors import LlmbioError
from llmbio.figures import draw_figure
from llmbio.studies.claims import NOT_APPLICABLE
from llmbio.studies.intervals import wilson

log = logging.getLogger(__name__)

DEFAULT_CONFIGFILE = "config/config.yaml"  # the Snakefile's own `configfile:`
RUN_COLUMNS = [
    "run", "train_seed", "transcoder_seed", "study", "item", "claim_kind", "central",
    "measured", "status", "passed",
]  # fmt: skip
REPLICATION_COLUMNS = [
    "level", "study", "item", "claim_kind", "central", "n_runs", "n_passed", "pass_rate",
    "ci_low", "ci_high",
]  # fmt: skip
CAPTION = (
    "Left: every claim (rows) in every seed run (columns, organism seed s, transcoder seed t): "
    "pass, fail or not applicable. Right: per study, the share of runs in which all its "
    "central claims pass, with its 95% Wilson interval."
)


class SeedRun(NamedTuple):
    """One run of the replication: results/<base>-s<train_seed>-t<transcoder_seed>/."""

    base: str
    train_seed: int
    transcoder_seed: int

    @property
    def name(self) -> str:
        return f"{self.base}-s{self.train_seed}-t{self.transcoder_seed}"

    def overrides(self) -> dict:
        """The keys this run sets on top of the base config."""
        return {
            "run": self.name,
            "train": {"seed": self.train_seed},
            "transcoder": {"seed": self.transcoder_seed},
        }


def seed_runs(
    base: str, train_seeds: Sequence[int], transcoder_seeds: Sequence[int]
) -> list[SeedRun]:
    """Every (organism seed, transcoder seed) pair, organism seeds outermost."""
    for flag, seeds in (("train seeds", train_seeds), ("transcoder seeds", transcoder_seeds)):
        if not seeds:
            raise LlmbioError(f"no {flag} given; list at least one (e.g. 0 1 2 3 4)")
        if len(set(seeds)) < len(seeds) or any(s < 0 for s in seeds):
            raise LlmbioError(f"{flag} {list(seeds)}: give distinct integers >= 0")
    return [SeedRun(base, s, t) for s in train_seeds for t in transcoder_seeds]


def base_config(configfile: str | Path, workdir: str | Path = ".") -> dict:
    """The base config as Snakemake merges it (the Snakefile's default file, then
    ``configfile`` over it), validated; a released-model config has no seeds to vary."""
    workdir = Path(workdir)
    merged: dict = {}
    for path in dict.fromkeys([workdir / DEFAULT_CONFIGFILE, workdir / configfile]):
        if not path.is_file():
            raise LlmbioError(f"config file {path} not found; run from the repository root")
        _merge(merged, yaml.safe_load(path.read_text()) or {})
    cfg = load_config(merged)
    if cfg.pretrained is not None:
        raise LlmbioError(
            f"{configfile} runs a released model: it trains no organism or transcoder whose "
            "seeds could be varied; give an organism config (config/config.yaml)"
        )
    return merged


def _merge(into: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def snakemake_command(configfiles: Sequence[str | Path], cores: int | str) -> list[str]:
    configs = [str(c) for c in configfiles]
    return [sys.executable, "-m", "snakemake", "--cores", str(cores), "--configfile", *configs]


def run_replication(
    configfile: str | Path,
    train_seeds: Sequence[int],
    transcoder_seeds: Sequence[int],
    cores: int | str = "all",
    workdir: str | Path = ".",
    snakemake_args: Sequence[str] = (),
) -> Path:
    """Run the DAG once per seed pair (in the repository ``workdir``), then aggregate.

    Returns the replication folder ``<workdir>/results/<base>-replication/``.
    """
    workdir = Path(workdir)
    if not (workdir / "Snakefile").is_file():
        raise LlmbioError(f"no Snakefile in {workdir.resolve()}; run from the repository root")
    config = base_config(configfile, workdir)
    runs = seed_runs(load_config(config).run, train_seeds, transcoder_seeds)
    out = workdir / "results" / f"{runs[0].base}-replication"
    (out / "configs").mkdir(parents=True, exist_ok=True)
    for i, run in enumerate(runs, 1):
        override = out / "configs" / f"{run.name}.yaml"
        override.write_text(yaml.safe_dump(run.overrides(), sort_keys=False))
        configfiles = [configfile, override.relative_to(workdir)]
        command = [*snakemake_command(configfiles, cores), *snakemake_args]
        log.info("replication run %d of %d: %s", i, len(runs), " ".join(command[1:]))
        start = time.monotonic()
        proc = subprocess.run(command, cwd=workdir)
        if proc.returncode != 0:
            raise LlmbioError(
                f"snakemake failed for results/{run.name}/ (exit {proc.returncode}); see its "
                f"log above and results/{run.name}/logs/, then rerun (finished runs are kept)"
            )
        log.info("results/%s/ done in %.0f s", run.name, time.monotonic() - start)
    manifest = {
        "configfile": str(configfile),
        "train_seeds": list(train_seeds),
        "transcoder_seeds": list(transcoder_seeds),
        "runs": [r.name for r in runs],
    }
    (out / "replicate.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    write_replication([(r, workdir / "results" / r.name) for r in runs], out)
    return out


def run_claims(runs: Sequence[tuple[SeedRun, str | Path]]) -> pd.DataFrame:
    """The claim rows of every run's ``audit.parquet``, labelled with the run and its seeds."""
    frames = []
    for run, run_dir in runs:
        audit = load_audit(run_dir)
        missing = [c for c in ("claim_kind", "central") if c not in audit.columns]
        if missing:
            raise LlmbioError(
                f"{Path(run_dir) / 'audit.parquet'} lacks the columns {missing}; rerun the "
                "`audit` rule of that run with this version of llmbio"
            )
        claims = audit[audit["kind"] == "claim"].assign(
            run=run.name, train_seed=run.train_seed, transcoder_seed=run.transcoder_seed
        )
        frames.append(claims[RUN_COLUMNS])
    table = pd.concat(frames, ignore_index=True)
    return table.astype({"central": bool, "passed": bool, "measured": float})


def replication_table(claims: pd.DataFrame) -> pd.DataFrame:
    """Pass rates across runs from :func:`run_claims`' table (see the module docstring).

    A run where a claim is ``not_applicable`` does not count towards its ``n_runs``; a claim
    applicable in no run has ``n_runs`` 0 and no rate.
    """
    keys = ["study", "item"]
    applicable = claims[claims["status"] != NOT_APPLICABLE]
    first = claims.drop_duplicates(keys).set_index(keys)[["claim_kind", "central"]]
    counts = applicable.groupby(keys)["passed"].agg(n_runs="size", n_passed="sum")
    per_claim = first.join(counts).fillna({"n_runs": 0, "n_passed": 0}).reset_index()
    per_claim.insert(0, "level", "claim")
    per_study = []
    for run, audit in claims.assign(kind="claim").groupby("run", sort=False):
        table = central_claims(audit)
        per_study.append(table["holds"].rename(run))
    central = pd.concat(per_study, axis=1) if per_study else pd.DataFrame()
    rows = [
        {
            "level": "central",
            "study": study,
            "item": "",
            "claim_kind": "",
            "central": True,
            "n_runs": int(holds.notna().sum()),
            "n_passed": int(holds.fillna(False).sum()),
        }
        for study, holds in central.iterrows()
    ]
    table = pd.concat([per_claim, pd.DataFrame(rows)], ignore_index=True)
    table = table.astype({"n_runs": int, "n_passed": int, "central": bool})
    intervals = [
        wilson(k, n) if n else (float("nan"), float("nan"))
        for k, n in zip(table["n_passed"], table["n_runs"], strict=True)
    ]
    rate = table["n_passed"] / table["n_runs"].where(table["n_runs"] > 0)
    return table.assign(
        pass_rate=rate.astype(float),
        ci_low=[lo for lo, _ in intervals],
        ci_high=[hi for _, hi in intervals],
    )[REPLICATION_COLUMNS]


def write_replication(runs: Sequence[tuple[SeedRun, str | Path]], out: str | Path) -> Path:
    """``runs.parquet``, ``replication.parquet`` and ``figures/replication.png`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    claims = run_claims(runs)
    table = replication_table(claims)
    claims.to_parquet(out / "runs.parquet", index=False)
    table.to_parquet(out / "replication.parquet", index=False)
    draw_figure(
        draw_replication,
        out / "figures" / "replication.png",
        [out / "runs.parquet", out / "replication.parquet"],
        caption=CAPTION,
    )
    print(replication_summary(table, n_runs=len(runs)))
    return out / "replication.parquet"


def replication_summary(table: pd.DataFrame, n_runs: int) -> str:
    """One line per study with central claims: in how many runs they all hold."""
    central = table[table["level"] == "central"]
    claims = table[(table["level"] == "claim") & (table["n_runs"] > 0)]
    always = int((claims["n_passed"] == claims["n_runs"]).sum())
    lines = [f"{n_runs} runs: {always} of {len(claims)} claims pass in every run where applicable"]
    for r in central.itertuples():
        lines.append(
            f"  {r.study}: central claims hold in {r.n_passed} of {r.n_runs} runs"
            + (f" (95% CI {r.ci_low:.2f}-{r.ci_high:.2f})" if r.n_runs else "")
        )
    return "\n".join(lines)


def draw_replication(claims: pd.DataFrame, table: pd.DataFrame):
    """The figure of :func:`write_replication`, from its two tables (central claims starred)."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap

    runs = list(dict.fromkeys(claims["run"]))
    labels = claims["study"] + "/" + claims["item"] + np.where(claims["central"], " *", "")
    rows = list(dict.fromkeys(labels))
    # 0 fail, 1 pass, 2 not applicable, 3 absent from that run's audit
    code = np.where(claims["status"] == NOT_APPLICABLE, 2, claims["passed"].astype(int))
    grid = pd.Series(code, index=[labels, claims["run"]]).unstack().reindex(rows)[runs]
    central = table[table["level"] == "central"]
    height = max(3.0, 0.16 * len(rows) + 1.5)
    fig = plt.figure(figsize=(11, height))
    # the study panel is as tall as its bars need, at the top beside the claim grid
    bars = min(height - 1.0, 0.4 * len(central) + 1.2)
    grid_spec = fig.add_gridspec(
        2, 2, width_ratios=[max(2, len(runs)), 3], height_ratios=[bars, height - bars]
    )
    left, right = fig.add_subplot(grid_spec[:, 0]), fig.add_subplot(grid_spec[0, 1])
    cmap = ListedColormap(["#d7301f", "#1a9850", "#bdbdbd", "#ffffff"])
    left.imshow(grid.fillna(3).to_numpy(float), cmap=cmap, vmin=0, vmax=3, aspect="auto")
    left.set_xticks(range(len(runs)), ["-".join(r.rsplit("-", 2)[1:]) for r in runs], rotation=90)
    left.set_yticks(range(len(rows)), rows, fontsize=6)
    left.set_title("claims (* central): pass green, fail red, n/a grey", fontsize=9)
    y = np.arange(len(central))
    rate = central["pass_rate"].fillna(0).to_numpy()
    err = [rate - central["ci_low"].fillna(0), central["ci_high"].fillna(0) - rate]
    right.barh(y, rate, xerr=err, color="#4575b4", capsize=3)
    counts = zip(central["study"], central["n_passed"], central["n_runs"], strict=True)
    right.set_yticks(y, [f"{study} ({k}/{n})" for study, k, n in counts])
    right.set_xlim(0, 1)
    right.invert_yaxis()
    right.set_xlabel("share of runs where all central claims pass (95% CI)")
    right.set_title("central claims per study", fontsize=9)
    fig.tight_layout()
    return fig

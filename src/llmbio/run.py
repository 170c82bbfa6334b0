"""Open a run: ``results/<run>/`` with its recorded config, model, tokenizer, transcoder, world.

Every tool that works on a finished run (the CLI, the studies, your own Python) opens it here::

    from llmbio.run import Run

    run = Run("results/organism")
    run.config.trace.threads             # results/organism/config.yaml, as the run recorded it
    run.model, run.tokenizer, run.clt    # loaded (and checked) on first use, then kept
    run.world                            # the organism's synthetic world
    run.table("features/labels.parquet")

On a released model (config ``pretrained:``) ``model``, ``tokenizer`` and ``clt`` are the
downloaded ones, on the config's device and dtype (:func:`llmbio.pretrained.load_pretrained`).
A missing or damaged file raises :class:`~llmbio.errors.ArtefactError`, one line naming the
path and the rule that remakes it (:mod:`llmbio.artefacts`).
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from llmbio import artefacts
from llmbio.config import RUN_CONFIG_FILE, ConfigError, RunConfig, load_config
from llmbio.errors import ArtefactError, LlmbioError

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn
    from transformers import PreTrainedTokenizerBase

    from llmbio.transcoder.clt import CrossLayerTranscoder
    from llmbio.world import World

log = logging.getLogger(__name__)

# what a run folder holds, relative to it, and the rule that writes it (longest prefix wins)
RULES = {
    RUN_CONFIG_FILE: "run_config",
    "world.json": "world",
    "corpus.parquet": "corpus",
    "tokenizer": "tokenizer",
    "model": "train_model",
    "training_curve.parquet": "train_model",
    "behaviour.parquet": "behaviour",
    "behaviour_items.parquet": "behaviour",
    "activations": "cache_activations",
    "transcoder/clt": "train_transcoder",
    "transcoder/plt": "train_transcoder",
    "transcoder/eval.parquet": "evaluate_transcoder",
    "features": "feature_atlas",
    "graphs/showcase": "trace_graphs",
    "graphs/scores.parquet": "trace_graphs",
    "graphs/faithfulness.parquet": "faithfulness",
    "studies": "study_analysis",
    "audit.parquet": "audit",
    "audit.md": "audit",
}
TRANSCODERS = ("clt", "plt")  # the organism's: the CLT its graphs use, the PLT compared with it


def rule_for(relative: str | Path) -> str:
    """The rule that writes ``relative`` (a path inside a run folder)."""
    parts = Path(relative).parts
    for n in range(len(parts), 0, -1):
        rule = RULES.get("/".join(parts[:n]))
        if rule is not None:
            return rule
    raise ValueError(f"{relative} is not a file a run writes (known: {sorted(RULES)})")


def read_run_config(run_dir: str | Path) -> RunConfig | None:
    """``results/<run>/config.yaml`` as a config, or None when the run has not written one."""
    path = Path(run_dir) / RUN_CONFIG_FILE
    if not path.is_file():
        return None
    try:
        return load_config(path)
    except (ConfigError, TypeError, yaml.YAMLError) as err:
        raise ArtefactError(
            path,
            f"is not a valid run config ({artefacts.first_line(err)})",
            artefacts.remake("run_config"),
        ) from err


class Run:
    """The run folder ``run_dir`` (``results/<run>``); its artefacts load on first access.

    ``config``: the run's config when the caller has it (a Snakemake rule); by default the one
    the run recorded in ``config.yaml`` (the defaults, with a warning, for a run made before
    runs recorded it). ``transcoder``: which of the organism's transcoders ``clt`` is.
    """

    def __init__(
        self, run_dir: str | Path, config: RunConfig | None = None, transcoder: str = "clt"
    ) -> None:
        if transcoder not in TRANSCODERS:
            raise LlmbioError(f"transcoder {transcoder!r} is not known; use one of {TRANSCODERS}")
        self.dir = Path(run_dir)
        self.transcoder = transcoder
        if config is None:
            config = read_run_config(self.dir)
        if config is None:
            log.warning(
                "%s has no %s; using the default config (rerun `snakemake --cores all` for the "
                "run to record it)",
                self.dir,
                RUN_CONFIG_FILE,
            )
            config = RunConfig(run=self.dir.name)
        if config.pretrained is not None and transcoder != "clt":
            raise LlmbioError(
                f"run {config.run} uses the released transcoders {config.pretrained.transcoder}; "
                f"leave out the transcoder choice ({transcoder!r})"
            )
        self.config = config

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r})"

    @property
    def name(self) -> str:
        return self.config.run

    @property
    def model_dir(self) -> Path:
        if self.config.pretrained is not None:
            from llmbio.pretrained import model_dir

            return model_dir(self.config.pretrained)
        return self.dir / "model"

    @property
    def transcoder_dir(self) -> Path:
        if self.config.pretrained is not None:
            from llmbio.pretrained import transcoder_dir

            return transcoder_dir(self.config.pretrained)
        return self.dir / "transcoder" / self.transcoder

    @property
    def world_path(self) -> Path:
        return self.dir / "world.json"

    def path(self, relative: str | Path) -> Path:
        return self.dir / relative

    @cached_property
    def _released(self) -> tuple:
        from llmbio.pretrained import load_pretrained

        return load_pretrained(self.config.pretrained)

    @cached_property
    def model(self) -> nn.Module:
        """The run's model in eval mode (the organism: float32 on the CPU)."""
        if self.config.pretrained is not None:
            return self._released[0]
        return artefacts.load_model(self.model_dir, rule_for("model"))

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self.config.pretrained is not None:
            return self._released[1]
        return artefacts.load_tokenizer(self.model_dir, rule_for("model"))

    @cached_property
    def clt(self) -> CrossLayerTranscoder:
        """The run's transcoder, checked against its model (loads the model too)."""
        if self.config.pretrained is not None:
            return self._released[2]
        rule = rule_for(Path("transcoder") / self.transcoder)
        if not self.transcoder_dir.is_dir():  # said before the model is loaded for nothing
            raise ArtefactError(self.transcoder_dir, "is missing", artefacts.remake(rule))
        return artefacts.load_transcoder(self.transcoder_dir, rule, model=self.model)

    @cached_property
    def world(self) -> World:
        return artefacts.load_world(self.world_path, rule_for("world.json"))

    def table(self, relative: str | Path, **kwargs) -> pd.DataFrame:
        """A Parquet table of the run, e.g. ``run.table("features/labels.parquet")``."""
        return artefacts.read_table(self.dir / relative, rule_for(relative), **kwargs)

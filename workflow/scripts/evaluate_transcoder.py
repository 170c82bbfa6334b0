from pathlib import Path

from llmbio.config import load_config
from llmbio.logs import log_to
from llmbio.stages.transcoder import evaluate_stage

with log_to(snakemake.log[0]):
    evaluate_stage(
        load_config(snakemake.config),
        snakemake.input.cache,
        snakemake.input.model,
        snakemake.input.world,
        {Path(p).name: p for p in snakemake.input.transcoders},
        snakemake.output.table,
        snakemake.output.figure,
    )

from llmbio.config import load_config
from llmbio.logs import log_to
from llmbio.stages.transcoder import cache_stage

with log_to(snakemake.log[0]):
    cache_stage(
        load_config(snakemake.config),
        snakemake.input.corpus,
        snakemake.input.model,
        snakemake.output[0],
    )

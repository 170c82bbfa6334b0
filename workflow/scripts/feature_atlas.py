from llmbio.config import load_config
from llmbio.logs import log_to
from llmbio.stages.features import features_stage

with log_to(snakemake.log[0]):
    features_stage(
        snakemake.input.cache,
        snakemake.input.model,
        snakemake.input.transcoder,
        snakemake.input.world,
        snakemake.output[0],
        threads=load_config(snakemake.config).trace.threads,
    )

from llmbio.config import load_config
from llmbio.logs import log_to
from llmbio.stages.organism import corpus_stage

with log_to(snakemake.log[0]):
    corpus_stage(load_config(snakemake.config), snakemake.input.world, snakemake.output[0])

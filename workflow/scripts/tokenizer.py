from llmbio.logs import log_to
from llmbio.stages.organism import tokenizer_stage

with log_to(snakemake.log[0]):
    tokenizer_stage(snakemake.input.corpus, snakemake.input.world, snakemake.output[0])

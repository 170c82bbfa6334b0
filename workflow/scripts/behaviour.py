from llmbio.config import load_config
from llmbio.logs import log_to
from llmbio.stages.organism import behaviour_stage

with log_to(snakemake.log[0]):
    behaviour_stage(
        load_config(snakemake.config),
        snakemake.input.world,
        snakemake.input.model,
        snakemake.output.summary,
        snakemake.output.per_prompt,
        snakemake.output.figure,
    )

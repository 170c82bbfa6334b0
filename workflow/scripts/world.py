from llmbio.config import load_config
from llmbio.logs import log_to
from llmbio.stages.organism import world_stage

with log_to(snakemake.log[0]):
    world_stage(load_config(snakemake.config), snakemake.output[0])

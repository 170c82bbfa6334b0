import shutil

from llmbio.config import load_config
from llmbio.logs import log_to
from llmbio.stages.pretrained import trace_pretrained_stage

with log_to(snakemake.log[0]):
    trace_pretrained_stage(load_config(snakemake.config), snakemake.output.graphs)
    shutil.copy(f"{snakemake.output.graphs}/scores.parquet", snakemake.output.scores)

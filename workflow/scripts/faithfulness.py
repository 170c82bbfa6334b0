from llmbio.config import load_config
from llmbio.logs import log_to
from llmbio.stages.attribution import faithfulness_stage

with log_to(snakemake.log[0]):
    faithfulness_stage(
        snakemake.input.model,
        snakemake.input.transcoder,
        snakemake.input.graphs,
        snakemake.output.table,
        snakemake.output.figure,
        threads=load_config(snakemake.config).trace.threads,
    )

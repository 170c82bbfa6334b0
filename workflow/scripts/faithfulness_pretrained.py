from llmbio.config import load_config
from llmbio.logs import log_to
from llmbio.stages.pretrained import faithfulness_pretrained_stage

with log_to(snakemake.log[0]):
    faithfulness_pretrained_stage(
        load_config(snakemake.config),
        snakemake.input.graphs,
        snakemake.output.table,
        snakemake.output.figure,
    )

from llmbio.config import load_config
from llmbio.logs import log_to
from llmbio.stages.transcoder import train_stage

with log_to(snakemake.log[0]):
    train_stage(
        load_config(snakemake.config),
        snakemake.input.cache,
        snakemake.output.transcoder,
        snakemake.output.train_log,
        snakemake.params.work_dir,
        cross_layer=snakemake.wildcards.kind == "clt",
    )

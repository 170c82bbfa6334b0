from llmbio.config import load_config
from llmbio.logs import log_to
from llmbio.stages.organism import train_stage

with log_to(snakemake.log[0]):
    train_stage(
        load_config(snakemake.config),
        snakemake.input.corpus,
        snakemake.input.tokenizer,
        snakemake.output.model,
        snakemake.output.curve,
        snakemake.params.checkpoint_dir,
    )

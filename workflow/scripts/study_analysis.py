from llmbio.config import load_config
from llmbio.logs import log_to
from llmbio.studies import run_study

with log_to(snakemake.log[0]):
    run_study(
        snakemake.input.study,
        snakemake.params.run_dir,
        snakemake.params.out_dir,
        config=load_config(snakemake.config),
    )

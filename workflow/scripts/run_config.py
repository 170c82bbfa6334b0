from llmbio.config import load_config, write_run_config
from llmbio.logs import log_to

with log_to(snakemake.log[0]):
    path = write_run_config(load_config(snakemake.config), snakemake.output[0])
    print(f"merged config written to {path}")

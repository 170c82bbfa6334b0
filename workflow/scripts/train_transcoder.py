from llmbio.config import load_config
from llmbio.logs import log_to
from llmbio.stages.transcoder import train_stage

cfg = load_config(snakemake.config)
cross_layer = snakemake.wildcards.kind == "clt"
with log_to(snakemake.log[0]):
    train_stage(
        cfg,
        snakemake.input.cache,
        snakemake.output.transcoder,
        snakemake.output.train_log,
        snakemake.params.work_dir,
        cross_layer=cross_layer,
        # from the config, not --cores: the thread count changes float rounding, and the same
        # config must give the same transcoder
        threads=cfg.train.threads if cross_layer else cfg.trace.threads,
    )

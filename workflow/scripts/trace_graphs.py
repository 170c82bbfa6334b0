import shutil

from llmbio.config import load_config
from llmbio.logs import log_to
from llmbio.stages.attribution import graph_scan, trace_stage
from llmbio.world import World

with log_to(snakemake.log[0]):
    cfg = load_config(snakemake.config)
    prompts = list(cfg.trace.prompts) or World.load(snakemake.input.world).showcase_prompts()
    trace_stage(
        snakemake.input.model,
        snakemake.input.transcoder,
        prompts,
        snakemake.output.graphs,
        max_feature_nodes=cfg.trace.max_feature_nodes,
        threads=cfg.trace.threads,
        scan=graph_scan(cfg),
    )
    shutil.copy(f"{snakemake.output.graphs}/scores.parquet", snakemake.output.scores)

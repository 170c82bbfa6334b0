# NETWORK: the only script that downloads (rules download_model / download_transcoder).
from llmbio.config import load_config
from llmbio.logs import log_to
from llmbio.pretrained import download_model, download_transcoder

with log_to(snakemake.log[0]):
    cfg = load_config(snakemake.config).pretrained
    if snakemake.rule == "download_model":
        download_model(cfg, snakemake.output[0])
    else:
        download_transcoder(cfg, snakemake.output[0])

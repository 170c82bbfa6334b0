from pathlib import Path

from llmbio.logs import log_to
from llmbio.studies import write_claims

with log_to(snakemake.log[0]):
    out = Path(snakemake.output[0])
    write_claims(snakemake.input.study, out.parent, out)

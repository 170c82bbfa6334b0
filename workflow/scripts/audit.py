from llmbio.audit import run_audit
from llmbio.environment import write_environment
from llmbio.logs import log_to

with log_to(snakemake.log[0]):
    run_audit(
        snakemake.params.results_dir,
        snakemake.params.studies_root,
        strict=snakemake.params.strict,
        out_table=snakemake.output.table,
        out_markdown=snakemake.output.markdown,
    )
    # the machine the findings are stated on (llmbio findings reads it)
    write_environment(snakemake.output.environment)

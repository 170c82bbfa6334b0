# The audit: every study's claims against its measured tables, every figure against the tables
# it was drawn from. Runs last: it depends on everything `rule all` asks for.


def audit_inputs(wildcards):
    studies = [f"{R}/studies/{s}/claims.parquet" for s in STUDIES]
    # the recorded config is no input: rewriting it (a changed key) must not redo the audit
    skip = {f"{R}/audit.parquet", f"{R}/audit.md", f"{R}/config.yaml"}
    upstream = [f for f in rules.all.input if f not in skip]
    return studies + upstream


rule audit:
    input:
        audit_inputs,
    output:
        table=f"{R}/audit.parquet",
        markdown=report(f"{R}/audit.md", caption="../report/audit.rst", category="Audit"),
    params:
        studies_root=STUDIES_ROOT,
        results_dir=R,
        strict=CFG.audit_strict,
    log:
        f"{R}/logs/audit.log",
    benchmark:
        f"{R}/benchmarks/audit.tsv"
    script:
        "../scripts/audit.py"

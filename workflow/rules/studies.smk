# Case studies: one folder per study under studies/ (see README "Add a case study").
# Generic rules for every study; a study's own studies/<name>/rules.smk is included too and may
# add rules (e.g. graphs its analysis reads) or replace the analysis with
# `ruleorder: <its rule> > study_analysis`.
import os
from pathlib import Path

import llmbio.cases
from llmbio.studies import discover_studies, load_study

STUDIES_ROOT = os.path.relpath(os.path.join(workflow.basedir, "studies"))
STUDIES = discover_studies(STUDIES_ROOT)
# parsed (and validated) at start-up, so a broken study.yaml stops the run before any job
STUDY_DEFS = {name: load_study(os.path.join(STUDIES_ROOT, name)) for name in STUDIES}


wildcard_constraints:
    study="|".join(STUDIES) or "(?!)",  # no study yet: match nothing


def study_of(wildcards):
    return STUDY_DEFS[wildcards.study]


def case_package_files(study):
    """Every module of the study's code package `llmbio.cases.<study>` (none if it has none),
    found where Python imports it from, so an edit to the code that runs reruns the study."""
    package = Path(llmbio.cases.__file__).parent / study
    return sorted(str(path) for path in package.rglob("*.py"))


def study_analysis_inputs(wildcards):
    """study.yaml, analysis.py and its `llmbio.cases.<study>` package (so code edits rerun it)
    and the run outputs in `needs`.

    On a released model (config `pretrained:`) the needs are its downloaded model and
    transcoder: the organism's outputs (world, atlas) do not exist there.
    """
    folder = os.path.join(STUDIES_ROOT, wildcards.study)
    analysis = os.path.join(folder, "analysis.py")
    if CFG.pretrained is None:
        needs = [f"{R}/{need}" for need in study_of(wildcards).needs]
    else:
        needs = [MODEL_DIR, TRANSCODER_DIR]
    return {
        "study": os.path.join(folder, "study.yaml"),
        "code": ([analysis] if os.path.exists(analysis) else [])
        + case_package_files(wildcards.study),
        "needs": needs,
    }


rule study_analysis:
    input:
        unpack(study_analysis_inputs),
    output:
        tables=directory(f"{R}/studies/{{study}}/tables"),
        figures=report(
            directory(f"{R}/studies/{{study}}/figures"),
            patterns=["{name}.png"],
            caption="../report/study_figure.rst",
            category="Study {study}",
        ),
        done=f"{R}/studies/{{study}}/tables.done",
    params:
        # captions from study.yaml, shown in the Snakemake report
        captions=lambda wildcards: {f.id: f.caption for f in study_of(wildcards).figures},
        title=lambda wildcards: study_of(wildcards).title,
        run_dir=R,
        out_dir=f"{R}/studies/{{study}}",
    log:
        f"{R}/logs/studies/{{study}}/analysis.log",
    benchmark:
        f"{R}/benchmarks/studies/{{study}}/analysis.tsv"
    threads: CFG.trace.threads
    resources:
        # a released model runs on a GPU (see workflow/rules/pretrained.smk)
        gpu=0 if CFG.pretrained is None else 1,
        mem_mb=4000 if CFG.pretrained is None else 48000,
    script:
        "../scripts/study_analysis.py"


rule study_claims:
    input:
        study=os.path.join(STUDIES_ROOT, "{study}", "study.yaml"),
        done=f"{R}/studies/{{study}}/tables.done",
    output:
        f"{R}/studies/{{study}}/claims.parquet",
    log:
        f"{R}/logs/studies/{{study}}/claims.log",
    benchmark:
        f"{R}/benchmarks/studies/{{study}}/claims.tsv"
    script:
        "../scripts/study_claims.py"


for _study in STUDIES:
    if os.path.exists(os.path.join(STUDIES_ROOT, _study, "rules.smk")):

        include: os.path.join(STUDIES_ROOT, _study, "rules.smk")

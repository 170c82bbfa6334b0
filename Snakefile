# llmbio: regenerate the case studies of "On the Biology of a Large Language Model".
# `snakemake --cores all` runs the default organism config; `--configfile config/tiny.yaml`
# selects another run. Every output lives under results/<run>/. A config with a `pretrained:`
# section (config/gemma-2-2b.yaml, ...) runs a released model and its released transcoders
# instead: no organism or transcoder training, downloads into resources/ (the only network).
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.json")

RUN = config.get("run", "organism")
R = f"results/{RUN}"


include: "workflow/rules/common.smk"


if CFG.pretrained is None:

    include: "workflow/rules/organism.smk"
    include: "workflow/rules/transcoder.smk"
    include: "workflow/rules/trace.smk"
    include: "workflow/rules/features.smk"

    RUN_OUTPUTS = [
        f"{R}/behaviour.parquet",
        f"{R}/figures/training_curve.png",
        f"{R}/transcoder/eval.parquet",
        f"{R}/features",
    ]

else:

    include: "workflow/rules/pretrained.smk"

    RUN_OUTPUTS = []


include: "workflow/rules/studies.smk"
include: "workflow/rules/audit.smk"


rule all:
    input:
        f"{R}/config.yaml",
        RUN_OUTPUTS,
        f"{R}/graphs/scores.parquet",
        f"{R}/graphs/faithfulness.parquet",
        f"{R}/audit.md",

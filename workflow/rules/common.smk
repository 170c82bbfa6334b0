# Shared helpers for every rule file.
import sys

import yaml

from llmbio.config import config_dict, load_config
from llmbio.numerics import pin_cpu_kernels

CFG = load_config(config)
# every job of the run inherits these (the same floats on any x86-64 CPU: llmbio/numerics.py)
pin_cpu_kernels(CFG.cpu_kernels)


localrules:
    run_config,


# results/<run>/config.yaml: the merged config, read back by the CLI and llmbio.run. No other
# rule depends on it, so a new key or value reruns only this rule, and a comment nothing.
rule run_config:
    output:
        f"{R}/config.yaml",
    params:
        config=yaml.safe_dump(config_dict(CFG), sort_keys=False),
    log:
        f"{R}/logs/run_config.log",
    script:
        "../scripts/run_config.py"

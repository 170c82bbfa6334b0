# Shared helpers for every rule file.
import sys

from llmbio.config import load_config
from llmbio.numerics import pin_cpu_kernels

CFG = load_config(config)
# every job of the run inherits these (the same floats on any x86-64 CPU: llmbio/numerics.py)
pin_cpu_kernels(CFG.cpu_kernels)

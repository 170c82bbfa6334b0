# Shared helpers for every rule file.
import sys

from llmbio.config import load_config

CFG = load_config(config)

"""File-to-file pipeline stages: what each Snakemake rule (and the CLI) runs.

Each stage reads its inputs from paths, calls one library module and writes its outputs
atomically, so a rule's script is a one-line adapter.
"""

"""Did this machine compute the same floats as the machine of the recorded default run?

Prints the SHA-256 of a run's key artifacts (corpus, model weights, CLT weights, audit table)
and compares them with `fingerprints.json` beside this script, recorded from the default run of
2026-11-27 (README.md in this folder). With `cpu_kernels: avx2` (the default) any x86-64
machine should match; a mismatch names the first stage whose bytes differ, so a reader knows
from where on the tables diverge.

    python experiments/cross-machine-fingerprints/fingerprints.py results/organism
    python experiments/cross-machine-fingerprints/fingerprints.py results/organism --record
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path

from llmbio.environment import cpu_model

RECORD = Path(__file__).with_name("fingerprints.json")
ARTIFACTS = [  # in the DAG's order
    "corpus.parquet",
    "model/model.safetensors",
    "transcoder/clt",  # every file of the directory, in name order
    "audit.parquet",
]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if file.is_file():
            h.update(file.relative_to(path.parent).as_posix().encode())
            h.update(file.read_bytes())
    return h.hexdigest()


def fingerprints(run: Path) -> dict[str, str]:
    missing = [a for a in ARTIFACTS if not (run / a).exists()]
    if missing:
        sys.exit(f"{run / missing[0]} is missing: run `snakemake --cores all` for {run} first")
    return {a: sha256(run / a) for a in ARTIFACTS}


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        sys.exit(
            "usage: python experiments/cross-machine-fingerprints/fingerprints.py results/<run> "
            "[--record]"
        )
    run = Path(argv[0])
    now = fingerprints(run)
    if "--record" in argv:
        RECORD.write_text(json.dumps({"machine": _machine(), "sha256": now}, indent=2) + "\n")
        print(f"recorded {RECORD}")
        return
    record = json.loads(RECORD.read_text())
    print(f"recorded on: {record['machine']}\nthis machine: {_machine()}")
    for artifact in ARTIFACTS:
        same = now[artifact] == record["sha256"][artifact]
        print(f"{'same     ' if same else 'DIFFERENT'} {artifact}")


def _machine() -> str:
    import torch

    return (
        f"{platform.machine()}, {cpu_model()}, torch {torch.__version__}, "
        f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )

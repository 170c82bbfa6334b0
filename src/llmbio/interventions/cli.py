"""``llmbio intervene``: edit features of a run's model on one prompt and print the results table.

Example::

    llmbio intervene --run organism \
        --prompt "Fact : the capital of the state containing Dallas is" \
        --feature 2/117@-1=x-2 --feature 1/40=zero --generate 3
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import yaml

from llmbio.features.supernodes import resolve, supernodes_from_dict
from llmbio.interventions.edits import parse_edit
from llmbio.interventions.run import donor_activations, intervene

if TYPE_CHECKING:
    from llmbio.run import Run


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmbio intervene", description=__doc__.splitlines()[0])
    p.add_argument("--run", default="organism", help="results/<run>/ holds model and transcoder")
    p.add_argument("--results", default="results", help="the results root folder")
    p.add_argument(
        "--transcoder", choices=("clt", "plt"), default="clt",
        help="the organism's transcoder (a released model's run uses its own)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="default: the run's trace.threads")
    p.add_argument("--prompt", required=True, help="the prompt text")
    p.add_argument(
        "--feature", action="append", required=True, metavar="SPEC",
        help="an edit TARGET[@POSITIONS]=OP, e.g. 2/117@5=x-2, 2/117=5.0, Texas@-1=zero, "
        "2/9@-1=dx3 (inject 3x the donor's activation); repeatable",
    )  # fmt: skip
    p.add_argument("--supernodes", help="YAML {name: {features, rule, positions}} for targets")
    p.add_argument("--labels", help="label table for supernode rules (default: the run's)")
    p.add_argument("--donor-prompt", help="prompt whose activations dx edits inject")
    p.add_argument("--donor-position", type=int, default=-1, help="donor token position")
    p.add_argument("--freeze-attention", action="store_true", help="keep clean attention")
    p.add_argument(
        "--freeze-final-norm", action="store_true",
        help="divide by the clean final-norm denominator, as the attribution graph does",
    )  # fmt: skip
    p.add_argument("--constrained", help="constrained layers: 'a:b' (a..b-1) or '0,1,2'")
    p.add_argument("--top-k", type=int, default=10, help="top tokens to report")
    p.add_argument("--generate", type=int, default=0, help="greedy tokens to generate")
    p.add_argument("--out", help="also write the table to this Parquet file")
    return p


def parse_layers(text: str | None) -> list[int] | None:
    """``"1:3"`` -> ``[1, 2]``; ``"0,2"`` -> ``[0, 2]``."""
    if not text:
        return None
    try:
        if ":" in text:
            start, stop = text.split(":")
            return list(range(int(start), int(stop)))
        return [int(x) for x in text.split(",")]
    except ValueError as err:
        raise SystemExit(f"--constrained {text!r}: use 'a:b' or a comma-separated list") from err


def _supernodes(args, run: Run) -> dict:
    if not args.supernodes:
        return {}
    nodes = supernodes_from_dict(yaml.safe_load(Path(args.supernodes).read_text()))
    if args.labels:
        labels = pd.read_parquet(args.labels)
    elif run.path("features/labels.parquet").exists():
        labels = run.table("features/labels.parquet")
    else:
        labels = None
    return {n.name: n for n in resolve(nodes, labels)}


def intervene_cli(argv: Sequence[str] | None = None, run: Run | None = None) -> int:
    """Parse ``argv``, run the intervention, print the results table; returns the exit code.

    ``run``: the run already opened (by ``llmbio intervene``); else ``--results``/``--run``.
    """
    import torch

    from llmbio.run import Run

    args = _parser().parse_args(argv)
    if run is None:
        run = Run(Path(args.results) / args.run, transcoder=args.transcoder)
    torch.set_num_threads(args.threads or run.config.trace.threads)
    named = _supernodes(args, run)
    edits = [parse_edit(spec, named) for spec in args.feature]
    model, clt, tokenizer = run.model, run.clt, run.tokenizer
    if any(e.kind == "inject" for e in edits):
        if not args.donor_prompt:
            raise SystemExit("dx edits inject a donor's activations: pass --donor-prompt.")
        edits = [
            e.with_donor(donor_activations(model, clt, args.donor_prompt, e.features,
                                           args.donor_position, tokenizer))
            if e.kind == "inject" else e
            for e in edits
        ]  # fmt: skip
    result = intervene(
        model, clt, args.prompt, edits, freeze_attention=args.freeze_attention,
        constrained_layers=parse_layers(args.constrained),
        freeze_final_norm=args.freeze_final_norm, top_k=args.top_k,
        supernodes=named.values(), tokenizer=tokenizer, max_new_tokens=args.generate,
    )  # fmt: skip
    table = result.table(experiment=args.prompt)
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(table.drop(columns=["experiment", "edits"]).to_string(index=False))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_parquet(args.out, index=False)
    return 0

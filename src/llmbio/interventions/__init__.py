"""Feature interventions on the real forward pass: edits, modes, experiments and the CLI.

See :mod:`llmbio.interventions.engine` for how edits enter the model (the one splice every
intervention runs through, and :class:`Intervener` for one prompt in one mode),
:mod:`llmbio.interventions.run` for the results table and :mod:`llmbio.interventions.batched`
for batches of prompts, each with its own edits.
"""

from llmbio.interventions.cli import intervene_cli
from llmbio.interventions.edits import Edit, parse_edit
from llmbio.interventions.engine import Intervener, PassOutput
from llmbio.interventions.run import (
    InterventionResult,
    donor_activations,
    generate_with_edits,
    intervene,
)

__all__ = [
    "Edit",
    "InterventionResult",
    "Intervener",
    "PassOutput",
    "donor_activations",
    "generate_with_edits",
    "intervene",
    "intervene_cli",
    "parse_edit",
]

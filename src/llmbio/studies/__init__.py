"""Case studies: ``studies/<name>/study.yaml`` definitions, their analyses and their claims.

- :mod:`llmbio.studies.spec`: the study file as frozen dataclasses (:func:`load_study`);
- :mod:`llmbio.studies.schema`: its JSON schema;
- :mod:`llmbio.studies.runner`: runs ``studies/<name>/analysis.py`` (:func:`run_study`);
- :mod:`llmbio.studies.claims`: checks claims against the measured tables;
- :mod:`llmbio.studies.swaps`: the calibration loop of the studies that swap a supernode.

This is the framework every study shares; a study's own code is :mod:`llmbio.cases`.<name>.
"""

from llmbio.studies.claims import CLAIM_COLUMNS, evaluate_claims, write_claims
from llmbio.studies.runner import StudyContext, run_study
from llmbio.studies.schema import study_schema
from llmbio.studies.spec import (
    Claim,
    Edit,
    FigureSpec,
    Intervention,
    Prompt,
    Study,
    StudyError,
    Supernode,
    discover_studies,
    load_study,
)

__all__ = [
    "CLAIM_COLUMNS",
    "Claim",
    "Edit",
    "FigureSpec",
    "Intervention",
    "Prompt",
    "Study",
    "StudyContext",
    "StudyError",
    "Supernode",
    "discover_studies",
    "evaluate_claims",
    "load_study",
    "run_study",
    "study_schema",
    "write_claims",
]

"""JSON schema of ``studies/<name>/study.yaml``.

The schema lives here, in code, so the loader never depends on a file outside the package;
``workflow/schemas/study.schema.json`` is generated from :func:`study_schema` (a test checks
they match)::

    python -c "import json; from llmbio.studies import study_schema; \
print(json.dumps(study_schema(), indent=2))" > workflow/schemas/study.schema.json

Cross-references (an intervention's prompt exists, an edit names exactly one target, ...)
are checked by :func:`llmbio.studies.spec.load_study` after the schema.
"""

from __future__ import annotations

AGGREGATES = ("mean", "min", "max", "median", "sum", "count", "first", "share_true")
COMPARISONS = (">=", "<=", ">", "<", "==")
# what a claim tests: the model's own behaviour, that a feature or structure is found, that an
# intervention moves the output (mechanism), or that a control edit does not (control)
CLAIM_KINDS = ("behaviour", "existence", "mechanism", "control")
EDIT_OPS = ("scale", "set", "zero", "inject")
DEFAULT_NEEDS = ("world.json", "model")

_NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]*$"}
# ids become file names (figures) and table keys, so keep them path-safe
_ID = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$"}
_TEXT = {"type": "string"}
_SCALAR = {"type": ["string", "number", "boolean"]}
_POSITION = {"type": ["integer", "string"]}  # token index, token text, or "all"


def _object(properties: dict, required: tuple[str, ...] = (), **extra) -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": list(required),
        "properties": properties,
        **extra,
    }


def _list(items: dict, **extra) -> dict:
    return {"type": "array", "items": items, **extra}


def _prompt() -> dict:
    return _object({"id": _ID, "text": _TEXT, "target": _TEXT}, ("id", "text"))


_FAMILIES = {"type": "array", "items": _ID}  # prompt families: organism, gemma-2-2b, ...


def _prompt_rule() -> dict:
    # released models have no ground-truth labels: select features on a prompt of the run's
    # family (see llmbio.studies.rules)
    return _object(
        {
            "prompt": _ID,
            "token": _TEXT,
            "promotes": _TEXT,
            "contrast_prompt": _ID,
            "top_k": {"type": "integer", "minimum": 1},
            "layers": _list({"type": "integer"}),
        },
        ("prompt",),
    )


def _supernode() -> dict:
    # the rule keys of llmbio.features.supernodes (a mapping) or a pandas query string
    rule = _object(
        {
            "variable": _TEXT,
            "value": _SCALAR,
            "min_f1": {"type": "number"},
            "min_precision": {"type": "number"},
            "min_recall": {"type": "number"},
            "layers": _list({"type": "integer"}),
        },
        ("variable", "value"),
    )
    return _object(
        {
            "name": _NAME,
            "features": _list({"type": "string", "pattern": "^[0-9]+/[0-9]+$"}),
            "rule": {"anyOf": [rule, _prompt_rule(), {"type": "string"}]},
            "positions": _list(_POSITION),
            "families": _FAMILIES,
            "transcoder": _TEXT,
        },
        ("name",),
    )


def _edit() -> dict:
    edit = _object(
        {
            "supernode": _NAME,
            "feature": {"type": "string", "pattern": "^[0-9]+/[0-9]+$"},
            "position": _POSITION,
            "op": {"enum": list(EDIT_OPS)},
            "value": {"type": "number"},
            "donor_prompt": _ID,
        },
        ("op",),
    )
    edit["allOf"] = [
        {
            "if": {"properties": {"op": {"const": "inject"}}},
            "then": {"required": ["donor_prompt"]},
        },
        {"if": {"properties": {"op": {"enum": ["scale", "set"]}}}, "then": {"required": ["value"]}},
    ]
    return edit


def _intervention() -> dict:
    layers = {
        "anyOf": [_list({"type": "integer"}, minItems=2, maxItems=2), {"type": "null"}],
    }
    return _object(
        {
            "id": _ID,
            "prompt": _ID,
            "edits": _list(_edit(), minItems=1),
            "freeze_attention": {"type": "boolean"},
            "constrained_layers": layers,
            "families": _FAMILIES,
        },
        ("id", "prompt", "edits"),
    )


def _figure() -> dict:
    tables = {"anyOf": [_TEXT, _list(_TEXT, minItems=1)]}
    return _object(
        {"id": _ID, "kind": _TEXT, "table": tables, "caption": _TEXT, "families": _FAMILIES},
        ("id", "kind", "table", "caption"),
    )


def _claim() -> dict:
    where = {"anyOf": [_TEXT, {"type": "object", "additionalProperties": True}]}
    return _object(
        {
            "id": _ID,
            "kind": {"enum": list(CLAIM_KINDS)},
            "statement": _TEXT,
            "table": _TEXT,
            "where": where,
            "column": _TEXT,
            "aggregate": {"enum": list(AGGREGATES)},
            "op": {"enum": list(COMPARISONS)},
            "threshold": {"type": "number"},
            "paper_value": {"type": ["number", "string"]},
            "paper_ref": _TEXT,
            "families": _FAMILIES,
            "central": {"type": "boolean"},
        },
        ("id", "kind", "statement", "table", "column", "aggregate", "op", "threshold"),
    )


def study_schema() -> dict:
    """JSON schema (draft 2020-12) of one study file."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "llmbio case study (studies/<name>/study.yaml)",
        **_object(
            {
                "name": _NAME,
                "title": _TEXT,
                "description": _TEXT,
                "paper_section": _TEXT,
                "needs": _list(_TEXT),
                "prompts": {"type": "object", "additionalProperties": _list(_prompt())},
                "supernodes": _list(_supernode()),
                "interventions": _list(_intervention()),
                "figures": _list(_figure()),
                "claims": _list(_claim()),
            },
            ("name", "title"),
        ),
    }

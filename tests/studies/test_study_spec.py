"""study.yaml: a valid study loads into dataclasses; every mistake names the file and field."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from llmbio.studies import StudyError, discover_studies, load_study, study_schema

ROOT = Path(__file__).resolve().parents[2]

VALID = {
    "name": "multihop",
    "title": "Multi-step reasoning",
    "description": "Dallas -> Texas -> Austin.",
    "paper_section": "Biology §4",
    "prompts": {
        "organism": [
            {"id": "dallas", "text": "Fact: the capital of the state containing Dallas is",
             "target": "Austin"},
            {"id": "oakland", "text": "Fact: the capital of the state containing Oakland is"},
        ],
        "some-new-model": [{"id": "dallas", "text": "Dallas?"}],
    },
    "supernodes": [
        {"name": "texas", "rule": {"variable": "state", "value": "Texas", "min_f1": 0.5}},
        {"name": "say_austin", "features": ["3/117", "3/5"], "positions": [-1, "is"]},
        {"name": "california", "rule": "variable == 'state' and f1 > 0.5"},
    ],
    "interventions": [
        {"id": "swap", "prompt": "dallas", "freeze_attention": True,
         "constrained_layers": [0, 2],
         "edits": [
             {"supernode": "texas", "position": "all", "op": "scale", "value": -2},
             {"supernode": "california", "position": "Dallas", "op": "inject", "value": 2,
              "donor_prompt": "oakland"},
             {"feature": "2/7", "position": 3, "op": "zero"},
         ]},
    ],
    "figures": [
        {"id": "swap", "kind": "intervention_panel", "table": "tables/swap.parquet",
         "caption": "Texas -2x."},
        {"id": "graph", "kind": "supernode_graph",
         "table": ["tables/nodes.parquet", "tables/edges.parquet"], "caption": "Graph."},
    ],
    "claims": [
        {"id": "austin_falls", "kind": "mechanism", "statement": "Texas -2x lowers p(Austin).",
         "table": "tables/swap.parquet", "where": {"edit": "texas_minus_2"},
         "column": "p_target", "aggregate": "mean", "op": "<=", "threshold": 0.2,
         "paper_value": 0.06, "paper_ref": "Biology §4"},
    ],
}  # fmt: skip


def write_study(root: Path, data: dict, folder: str | None = None) -> Path:
    d = root / (folder or data["name"])
    d.mkdir(parents=True, exist_ok=True)
    (d / "study.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return d


def _with(path: str, value) -> dict:
    """VALID with one field (dotted path, list indices as ints) replaced."""
    data = json.loads(json.dumps(VALID))
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = data
    for p in parents:
        node = node[p]
    node[last] = value
    return data


def test_a_valid_study_loads(tmp_path):
    study = load_study(write_study(tmp_path, VALID))
    assert study.name == "multihop" and study.path == tmp_path / "multihop"
    assert study.needs == ("world.json", "model")
    assert study.prompt("dallas").target == "Austin"
    assert study.prompt("oakland").target is None
    assert study.prompt("dallas", "some-new-model").text == "Dallas?"
    assert study.supernode("say_austin").features == ("3/117", "3/5")
    assert study.supernode("say_austin").positions == (-1, "is")
    assert study.supernode("texas").positions is None
    swap = study.interventions[0]
    assert swap.freeze_attention and swap.constrained_layers == (0, 2)
    assert [e.op for e in swap.edits] == ["scale", "inject", "zero"]
    assert swap.edits[1].donor_prompt == "oakland" and swap.edits[2].position == 3
    assert study.figures[1].tables == ("tables/nodes.parquet", "tables/edges.parquet")
    claim = study.claims[0]
    assert (claim.threshold, claim.paper_value, claim.where) == (
        0.2,
        0.06,
        {"edit": "texas_minus_2"},
    )
    assert (
        not claim.central
        and load_study(write_study(tmp_path / "central", _with("claims.0.central", True)))
        .claims[0]
        .central
    )


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("claims.0.op", "approx", "claims[0].op: 'approx' is not one of ['>=', '<=', '>', '<'"),
        ("claims.0.aggregate", "average", "claims[0].aggregate: 'average' is not one of"),
        ("claims.0.threshold", "high", "claims[0].threshold: 'high' is not of type 'number'"),
        ("claims.0.central", "yes", "claims[0].central: 'yes' is not of type 'boolean'"),
        ("claims.0.kind", "anecdote", "claims[0].kind: 'anecdote' is not one of ['behaviour'"),
        ("supernodes.1.features", ["3-117"], "supernodes[1].features[0]: '3-117' does not match"),
        ("interventions.0.edits.0.op", "double", "interventions[0].edits[0].op: 'double'"),
        ("figures.0.id", "a/b", "figures[0].id: 'a/b' does not match"),
        ("name", "Other", "name: 'Other' must equal the study's folder name 'multihop'"),
    ],
)  # fmt: skip
def test_an_invalid_field_is_named(tmp_path, path, value, expected):
    folder = write_study(tmp_path, _with(path, value), folder="multihop")
    with pytest.raises(StudyError) as err:
        load_study(folder)
    assert f"{folder / 'study.yaml'}: {expected}" in str(err.value)


def test_unknown_and_missing_keys_are_named(tmp_path):
    data = _with("supernodes.0.featurs", ["1/2"])
    del data["claims"][0]["threshold"]
    with pytest.raises(StudyError) as err:
        load_study(write_study(tmp_path, data))
    message = str(err.value)
    assert "supernodes[0].featurs: unknown key; allowed: ['families', 'features', 'name'" in message
    assert "claims[0].threshold: required key missing" in message


def test_a_claim_without_a_kind_is_refused(tmp_path):
    data = _with("claims.0.threshold", 0.2)
    del data["claims"][0]["kind"]
    with pytest.raises(StudyError, match=r"claims\[0\]\.kind: required key missing"):
        load_study(write_study(tmp_path, data))


def test_cross_references_are_checked(tmp_path):
    data = _with("interventions.0.prompt", "houston")
    data["interventions"][0]["edits"][0]["supernode"] = "texass"
    data["interventions"][0]["edits"][2]["supernode"] = "texas"  # and a feature: ambiguous
    data["claims"].append(dict(data["claims"][0]))
    with pytest.raises(StudyError) as err:
        load_study(write_study(tmp_path, data))
    message = str(err.value)
    assert "interventions[0].prompt: unknown prompt 'houston'" in message
    assert "interventions[0].edits[0].supernode: unknown supernode 'texass'" in message
    assert "interventions[0].edits[2]: give exactly one of 'supernode' or 'feature'" in message
    assert "claims[1]: duplicate id 'austin_falls'" in message


def test_inject_needs_a_donor_prompt(tmp_path):
    data = _with("interventions.0.edits.1", {"supernode": "texas", "op": "inject", "value": 1})
    with pytest.raises(StudyError, match=r"edits\[1\]\.donor_prompt: required key missing"):
        load_study(write_study(tmp_path, data))


def test_discover_studies_lists_study_folders_sorted(tmp_path):
    for name in ("zeta", "alpha"):
        write_study(tmp_path, {"name": name, "title": name})
    write_study(tmp_path, {"name": "x", "title": "template"}, folder="_template")
    (tmp_path / "notes").mkdir()
    assert discover_studies(tmp_path) == ["alpha", "zeta"]
    assert discover_studies(tmp_path / "absent") == []


def test_schema_file_is_generated_from_code():
    on_disk = json.loads((ROOT / "workflow" / "schemas" / "study.schema.json").read_text())
    assert on_disk == study_schema()


def test_the_template_is_a_valid_study_once_copied(tmp_path):
    shutil.copytree(ROOT / "studies" / "_template", tmp_path / "my_study")
    study = load_study(tmp_path / "my_study")
    assert study.claims and study.figures and study.interventions


def test_the_studies_mark_the_claims_their_central_finding_rests_on():
    central = {
        name: [c.id for c in load_study(ROOT / "studies" / name).claims if c.central]
        for name in discover_studies(ROOT / "studies")
    }
    swaps = [f"{s}_swap_heldout_{lang}" for s in ("operation", "operand", "language")
             for lang in ("en", "fr", "zh")]  # fmt: skip
    assert central == {
        "arithmetic": ["residue_swap_changes_residue", "block_swap_changes_magnitude"],
        "faithfulness": [],
        "multihop": [],
        "multilingual": swaps,
        "poems": ["injection_calibrated_success"],
        "refusals": ["ablate_harmful_request_complies", "inject_harmful_request_refuses"],
    }

"""A study on a "released" model: a tiny random Llama with a word-level tokenizer and a random
skip PLT, saved where the download rules put real ones, run through ``run_declared``."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from llmbio.config import load_config
from llmbio.pretrained import model_dir, transcoder_dir
from llmbio.studies import load_study, run_study, write_claims
from llmbio.studies.claims import NOT_APPLICABLE
from llmbio.tokenizer import build_tokenizer
from llmbio.transcoder.clt import CrossLayerTranscoder
from llmbio.transcoder.io import save_transcoder

FAMILY = "toy-1b"
PROMPTS = [
    {"id": "dallas", "text": "the capital of the state containing Dallas is", "target": " Austin"},
    {"id": "oakland", "text": "the capital of the state containing Oakland is",
     "target": " Sacramento"},
]  # fmt: skip
STUDY = {
    "name": "toy",
    "title": "A declared study on a released model",
    "prompts": {"organism": PROMPTS, FAMILY: PROMPTS},
    "supernodes": [
        {"name": "texas", "families": [FAMILY], "rule": {"prompt": "dallas", "contrast_prompt": "oakland", "top_k": 4}},  # noqa: E501
        {"name": "say_austin", "families": [FAMILY], "rule": {"prompt": "dallas", "token": "last", "promotes": " Austin"}},  # noqa: E501
        {"name": "explicit", "features": ["0/3", "1/5", "9/1"]},
        {"name": "labelled", "rule": {"variable": "state", "value": "Texas"}},
    ],
    "interventions": [
        {"id": "ablate", "prompt": "dallas", "edits": [{"supernode": "texas", "op": "scale", "value": -2}]},  # noqa: E501
        {"id": "swap", "prompt": "dallas", "edits": [
            {"supernode": "texas", "op": "scale", "value": -2},
            {"supernode": "explicit", "op": "inject", "value": 2, "donor_prompt": "oakland"}]},
        {"id": "organism_only", "prompt": "dallas", "families": ["organism"], "edits": [{"supernode": "labelled", "op": "zero"}]},  # noqa: E501
    ],
    "figures": [{"id": "organism_fig", "kind": "bar", "table": "tables/x.parquet", "caption": "c"}],
    "claims": [
        {"id": "organism_claim", "statement": "s", "table": "tables/x.parquet", "column": "y",
         "kind": "behaviour", "aggregate": "mean", "op": ">=", "threshold": 0},
        {"id": "real_claim", "statement": "s", "families": [FAMILY], "table": "tables/declared_prompts.parquet",  # noqa: E501
         "kind": "behaviour", "column": "p_target", "aggregate": "max", "op": ">=", "threshold": 0},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    cfg = load_config(
        {
            "run": FAMILY,
            "pretrained": {
                "family": FAMILY,
                "model": "toy/model",
                "transcoder": "toy/plt",
                "dtype": "float32",
                "device": "cpu",
                "cache_dir": str(root / "resources"),
            },
            "trace": {"max_feature_nodes": 40, "threads": 1},
            "train": {"threads": 1},
        }
    )
    texts = [p["text"] + " " + p["target"] for p in PROMPTS]
    tok = build_tokenizer(texts, max_number=3)
    torch.manual_seed(0)
    llama = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, bos_token_id=tok.bos_token_id,
    )  # fmt: skip
    LlamaForCausalLM(llama).save_pretrained(model_dir(cfg.pretrained))
    tok.save_pretrained(model_dir(cfg.pretrained))
    plt = CrossLayerTranscoder(2, 32, 16, cross_layer=False)
    with torch.no_grad():
        for p in plt.parameters():
            p.normal_(0, 0.3)
        plt.threshold.uniform_(0, 0.1)
    save_transcoder(plt, transcoder_dir(cfg.pretrained))
    study_dir = root / "studies" / "toy"
    study_dir.mkdir(parents=True)
    (study_dir / "study.yaml").write_text(yaml.safe_dump(STUDY, sort_keys=False))
    (study_dir / "analysis.py").write_text(
        "from llmbio.studies.generic import run_declared\n\n\n"
        "def run(context):\n"
        "    if context.family != 'organism':\n"
        "        return run_declared(context)\n"
        "    raise AssertionError('organism path on a released run')\n"
    )
    out = root / "results" / "studies" / "toy"
    run_study(study_dir, root / "results", out, config=cfg)
    return cfg, study_dir, out


def test_declared_tables(released):
    _, _, out = released
    prompts = pd.read_parquet(out / "tables" / "declared_prompts.parquet")
    assert list(prompts["prompt_id"]) == ["dallas", "oakland"]
    assert prompts["p_target"].between(0, 1).all() and (prompts["family"] == FAMILY).all()
    status = pd.read_parquet(out / "tables" / "declared_supernode_status.parquet")
    by_name = status.set_index("supernode")
    assert by_name.loc["texas", "n_members"] > 0
    assert by_name.loc["explicit", "n_members"] == 2  # 9/1 is outside the 2-layer transcoder
    assert "outside" in by_name.loc["explicit", "detail"]
    assert by_name.loc["labelled", "n_members"] == 0  # no ground truth on a released model
    effects = pd.read_parquet(out / "tables" / "declared_effects.parquet").set_index("experiment")
    assert effects.loc["ablate", "status"] == "run"
    assert effects.loc["swap", "donor_target"] == " Sacramento"
    assert effects.loc["organism_only", "status"] == "skipped"
    assert (out / "figures" / "declared_targets.png").is_file()
    assert (out / "figures" / "declared_effects.png").is_file()
    assert (out / "graphs" / "dallas.nodes.parquet").is_file()
    assert not list((out / "graphs").glob("*.graph.safetensors"))  # 0.4 GB each on real models
    graph_json = json.loads((out / "graphs" / "graph_files" / "dallas.json").read_text())
    assert graph_json["metadata"]["scan"] == "toy/plt"  # the transcoder repo, for feature pages


def test_claims_of_other_families_are_not_applicable(released):
    _, study_dir, out = released
    claims = write_claims(study_dir, out, out / "claims.parquet").set_index("claim_id")
    assert claims.loc["organism_claim", "status"] == NOT_APPLICABLE
    assert not claims.loc["organism_claim", "passed"]
    assert claims.loc["real_claim", "status"] == "pass"


def test_audit_leaves_not_applicable_items_out_of_the_verdict(released):
    from llmbio.audit import run_audit

    _, study_dir, out = released
    audit, markdown = run_audit(out.parents[1], study_dir.parent)
    figure = audit[audit["item"] == "studies/toy/figures/organism_fig.png"]
    assert list(figure["status"]) == [NOT_APPLICABLE]
    assert "audit PASS" in markdown
    assert load_study(study_dir).claims[0].families == ("organism",)

"""``llmbio.run.Run`` on a miniature run folder, and the checks of ``llmbio.artefacts``: every
damaged file is refused in one line naming the path and the rule that remakes it."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import write_tiny_run
from transformers import LlamaForCausalLM

from llmbio.errors import ArtefactError, LlmbioError
from llmbio.run import Run, rule_for


@pytest.fixture
def run_dir(tmp_path):
    return write_tiny_run(tmp_path / "results" / "r", config={"trace": {"threads": 3}})


def _refusal(run: Run, attribute: str) -> str:
    with pytest.raises(ArtefactError) as info:
        getattr(run, attribute)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_run_reads_its_recorded_config_and_loads_lazily(run_dir):
    run = Run(run_dir)
    assert run.name == "r" and run.config.trace.threads == 3
    assert "model" not in vars(run)  # nothing loaded yet
    assert run.clt.n_layers == 2 and run.clt.d_model == 16
    assert isinstance(run.model, LlamaForCausalLM) and not run.model.training
    assert run.model is run.model  # loaded once
    assert run.tokenizer.convert_tokens_to_ids("Texas") != run.tokenizer.unk_token_id


def test_a_run_without_config_yaml_gets_the_defaults_with_a_warning(run_dir, caplog):
    (run_dir / "config.yaml").unlink()
    with caplog.at_level(logging.WARNING, logger="llmbio"):
        run = Run(run_dir)
    assert run.config.run == "r" and run.config.trace.threads == 2
    assert "has no config.yaml" in caplog.text


def test_a_broken_config_yaml_names_its_rule(run_dir):
    (run_dir / "config.yaml").write_text("model:\n  d_modle: 12\n")
    with pytest.raises(
        ArtefactError, match=r"config.yaml is not a valid run config .*d_modle.*run_config"
    ):
        Run(run_dir)


def test_rule_for_knows_what_each_rule_writes():
    assert rule_for("model") == "train_model"
    assert rule_for("model/model.safetensors") == "train_model"
    assert rule_for("transcoder/plt/W_enc_0.safetensors") == "train_transcoder"
    assert rule_for("features/labels.parquet") == "feature_atlas"
    assert rule_for("studies/poems/tables/x.parquet") == "study_analysis"
    with pytest.raises(ValueError, match="not a file a run writes"):
        rule_for("elsewhere.txt")


def test_a_planted_pickle_is_refused_naming_the_fix(run_dir):
    model = run_dir / "model"
    weights = load_file(model / "model.safetensors")
    (model / "model.safetensors").unlink()
    torch.save(weights, model / "pytorch_model.bin")  # what an old transformers would write
    message = _refusal(Run(run_dir), "model")
    assert message == (
        f"{model / 'pytorch_model.bin'} is a pickle, which llmbio never loads (unpickling can "
        "run code); remake it with `snakemake --cores all --forcerun train_model`, or convert "
        "the weights to model.safetensors"
    )


def test_a_truncated_model_is_refused(run_dir):
    path = run_dir / "model" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    assert _refusal(Run(run_dir), "model") == (
        f"{path} is truncated or corrupt; remake it with "
        "`snakemake --cores all --forcerun train_model`"
    )


def test_garbage_in_place_of_the_model_is_refused(run_dir):
    path = run_dir / "model" / "model.safetensors"
    path.write_bytes(b"\x80\x04not a safetensors file at all")
    assert "is truncated or corrupt" in _refusal(Run(run_dir), "model")


def test_weights_missing_from_the_model_are_refused_not_randomised(run_dir):
    path = run_dir / "model" / "model.safetensors"
    weights = load_file(path)
    del weights["model.layers.1.mlp.down_proj.weight"]
    save_file(weights, path, metadata={"format": "pt"})
    message = _refusal(Run(run_dir), "model")
    assert "do not fit its config.json" in message and "train_model" in message


def test_missing_model_and_transcoder_name_their_rules(run_dir):
    run = Run(run_dir)
    (run_dir / "model" / "model.safetensors").rename(run_dir / "elsewhere")
    assert _refusal(run, "model").startswith(f"{run_dir / 'model'} holds no model.safetensors")
    assert "--forcerun train_transcoder" in _refusal(Run(run_dir, transcoder="plt"), "clt")


def test_a_truncated_transcoder_is_refused(run_dir):
    path = run_dir / "transcoder" / "clt" / "W_dec_1.safetensors"
    path.write_bytes(path.read_bytes()[:50])
    assert _refusal(Run(run_dir), "clt") == (
        f"{path} is truncated or corrupt; remake it with "
        "`snakemake --cores all --forcerun train_transcoder`"
    )


def test_a_transcoder_of_another_model_is_refused(run_dir):
    cfg = run_dir / "model" / "config.json"  # the model becomes a one-layer one
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "num_hidden_layers": 1}))
    weights = load_file(run_dir / "model" / "model.safetensors")
    kept = {k: v for k, v in weights.items() if ".layers.1." not in k}
    save_file(kept, run_dir / "model" / "model.safetensors", metadata={"format": "pt"})
    message = _refusal(Run(run_dir), "clt")
    assert "n_layers=2" in message and "--forcerun train_transcoder" in message


def test_damaged_tables_and_world_name_their_rules(run_dir):
    run = Run(run_dir)
    assert "--forcerun world" in _refusal(run, "world")
    (run_dir / "world.json").write_text("{}")
    assert "is not a world this llmbio reads" in _refusal(Run(run_dir), "world")
    labels = run_dir / "features" / "labels.parquet"
    labels.parent.mkdir()
    pd.DataFrame({"a": range(100)}).to_parquet(labels)
    labels.write_bytes(labels.read_bytes()[:40])
    with pytest.raises(
        ArtefactError, match=r"labels.parquet is truncated or corrupt .*feature_atlas"
    ):
        run.table("features/labels.parquet")


def test_a_released_model_run_has_no_plt(run_dir):
    config = {"pretrained": {"family": "gemma-2-2b", "model": "a/b", "transcoder": "a/c"}}
    write_tiny_run(run_dir, config=config)
    with pytest.raises(LlmbioError, match="released transcoders a/c"):
        Run(run_dir, transcoder="plt")
    assert Run(run_dir).model_dir.name == "a--b"

"""``intervene_cli`` on a run folder holding a tiny model, tokenizer and transcoder."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from llmbio.errors import ArtefactError, UsageError
from llmbio.interventions import intervene_cli
from llmbio.tokenizer import build_tokenizer
from llmbio.transcoder.clt import CrossLayerTranscoder
from llmbio.transcoder.io import save_transcoder

PROMPT = "the capital of Texas is"


@pytest.fixture
def run_dir(tmp_path):
    tok = build_tokenizer(["the capital of Texas is Austin .", "Dallas is in Texas ."])
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, bos_token_id=tok.bos_token_id,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    run = tmp_path / "results" / "r"
    model.save_pretrained(run / "model")
    tok.save_pretrained(run / "model")
    clt = CrossLayerTranscoder(2, 16, 8)
    with torch.no_grad():
        for p in clt.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        clt.threshold.zero_()
    save_transcoder(clt, run / "transcoder" / "clt")
    return run


def test_cli_prints_the_results_table(run_dir, tmp_path, capsys):
    nodes = tmp_path / "supernodes.yaml"
    nodes.write_text(yaml.safe_dump({"early": {"features": ["0/1", "0/2"], "positions": [-1]}}))
    out = tmp_path / "table.parquet"
    argv = [
        "--results", str(run_dir.parent), "--run", "r", "--prompt", PROMPT,
        "--feature", "0/3@-1=x-2", "--feature", "early=zero", "--feature", "1/4@2=dx2",
        "--donor-prompt", "Dallas is in Texas", "--supernodes", str(nodes),
        "--constrained", "0:1", "--generate", "2", "--out", str(out),
    ]  # fmt: skip
    assert intervene_cli(argv) == 0
    printed = capsys.readouterr().out
    assert "supernode" in printed and "generation" in printed
    table = pd.read_parquet(out)
    assert {"early", "0/3", "1/4"} <= set(table.loc[table["kind"] == "supernode", "name"])


def test_cli_errors_name_the_fix(run_dir):
    base = ["--results", str(run_dir.parent), "--run", "r", "--prompt", PROMPT]
    with pytest.raises(UsageError, match="--donor-prompt"):
        intervene_cli([*base, "--feature", "1/4=dx2"])
    with pytest.raises(ArtefactError, match=r"missing/model is missing; .*--forcerun train_model"):
        intervene_cli([*base, "--run", "missing", "--feature", "1/4=x2"])


def test_cli_freeze_final_norm_changes_only_the_edited_logits(run_dir, tmp_path):
    """``--freeze-final-norm`` divides by the clean final-norm denominator: the baseline is the
    model's, the intervened logits are those of :class:`Intervener` in that mode."""
    from llmbio.interventions import Edit, Intervener, parse_edit
    from llmbio.tokenizer import encode, load_tokenizer
    from llmbio.transcoder.io import load_transcoder

    tables = {}
    for flag in ((), ("--freeze-final-norm",)):
        out = tmp_path / f"t{len(flag)}.parquet"
        argv = [
            "--results", str(run_dir.parent), "--run", "r", "--prompt", PROMPT,
            "--feature", "0/3=5.0", "--out", str(out), *flag,
        ]  # fmt: skip
        assert intervene_cli(argv) == 0
        t = pd.read_parquet(out)
        tables[bool(flag)] = t[t["kind"] == "token"].set_index(["condition", "token_id"])["logit"]
    live, frozen = tables[False], tables[True]
    pd.testing.assert_series_equal(live["baseline"], frozen["baseline"], atol=1e-6)
    model = LlamaForCausalLM.from_pretrained(run_dir / "model").eval()
    tok = load_tokenizer(run_dir / "model")
    clt = load_transcoder(run_dir / "transcoder" / "clt", model=model)
    edit: Edit = parse_edit("0/3=5.0")
    runner = Intervener(model, clt, encode(tok, PROMPT), freeze_final_norm=True)
    logits = runner.run([edit]).logits[-1]
    live_logits = Intervener(model, clt, encode(tok, PROMPT)).run([edit]).logits[-1]
    ids = frozen["intervened"].index.to_numpy()
    assert frozen["intervened"].to_numpy() == pytest.approx(logits[ids].numpy(), abs=1e-6)
    assert (logits - live_logits).abs().max() > 100 * 1e-6  # the flag did change the pass

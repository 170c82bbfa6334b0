"""Wrong and hostile inputs: the CLI, run configs, study files, corrupted runs and the Python API.

Each case asserts the error (one line naming the problem, no traceback, the CLI's exit status:
2 for a bad argument, 1 for a failure) and that nothing was written. The run is one small
random model with its tokenizer, transcoder and recorded config, made once per session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llmbio.cli import main
from llmbio.config import RUN_CONFIG_FILE, ConfigError, load_config, write_run_config
from llmbio.errors import LlmbioError
from llmbio.studies.spec import StudyError, load_study
from llmbio.tokenizer import PromptTooLongError, UnknownTokenError, build_tokenizer
from llmbio.transcoder.clt import CrossLayerTranscoder
from llmbio.transcoder.io import save_transcoder

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["the capital of Texas is Austin .", "Dallas is in Texas .", "calc : 3 + 5 = 8"]
PROMPT = "the capital of Texas is"
MAX_POSITION = 24  # the model's positions: a prompt of 30 words is too long
LONG = " ".join(["is"] * 30)
ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0  # permissions do not bind root


@pytest.fixture(scope="session")
def results(tmp_path_factory) -> Path:
    """``<tmp>/results/bad/``: model, tokenizer, transcoder and config.yaml of a run."""
    root = tmp_path_factory.mktemp("bad_inputs") / "results"
    run = root / "bad"
    tok = build_tokenizer(TEXTS)
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=MAX_POSITION,
            bos_token_id=tok.bos_token_id,
        )
    ).eval()  # fmt: skip
    model.save_pretrained(run / "model")
    tok.save_pretrained(run / "model")
    clt = CrossLayerTranscoder(2, 16, 8)
    with torch.no_grad():
        for p in clt.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        clt.threshold.zero_()
    save_transcoder(clt, run / "transcoder" / "clt")
    cfg = {
        "run": "bad",
        "model": {"d_model": 16, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "d_mlp": 32,
                  "max_position": MAX_POSITION},
        "train": {"seq_len": 16},
        "trace": {"threads": 1},
    }  # fmt: skip
    write_run_config(load_config(cfg), run / RUN_CONFIG_FILE)
    return root


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """An empty working folder, the current directory of the case."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def snapshot(*roots: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for root in roots for p in root.rglob("*")}


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and the error line of ``llmbio <argv>`` run in this process."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    code, err = exc.value.code, capsys.readouterr().err
    if isinstance(code, str):  # Python prints a SystemExit message to stderr, status 1
        code, err = 1, err + code + "\n"
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines, "no error message"
    return code, lines[-1]


def check_refused(argv, expected_code, words, results, work, capsys) -> str:
    before = snapshot(results, work)
    code, line = cli(argv, capsys)
    assert code == expected_code, line
    assert line.startswith("llmbio") and "error:" in line, line
    for word in words:
        assert word in line, line
    assert snapshot(results, work) == before, "a refused command wrote files"
    return line


# --- llmbio trace ---------------------------------------------------------------------------

TRACE_CASES = {
    "unknown word": (["--prompt", "the capital of Zanzibar is"], 1, ["Zanzibar", "vocabulary"]),
    "empty prompt": (["--prompt", "  "], 2, ["--prompt", "empty"]),
    "prompt longer than the model": (["--prompt", LONG], 1, ["31 tokens", f"{MAX_POSITION}"]),
    "threads 0": (["--prompt", PROMPT, "--threads", "0"], 2, ["--threads 0", ">= 1"]),
    "threads negative": (["--prompt", PROMPT, "--threads", "-2"], 2, ["--threads -2"]),
    "threads not a number": (["--prompt", PROMPT, "--threads", "two"], 2, ["--threads", "two"]),
    "negative budget": (
        ["--prompt", PROMPT, "--max-feature-nodes", "-1"],
        2,
        ["--max-feature-nodes -1"],
    ),
    "no prompt": ([], 2, ["--prompt"]),
    "unknown option": (["--prompt", PROMPT, "--frobnicate"], 2, ["--frobnicate"]),
    "run name escapes results": (["--run", "../../x", "--prompt", PROMPT], 2, ["--run", "../../x"]),
    "empty run name": (["--run", "", "--prompt", PROMPT], 2, ["--run", "folder name"]),
    "absolute run name": (["--run", "/abs", "--prompt", PROMPT], 2, ["/abs"]),
    "run that does not exist": (["--run", "nope", "--prompt", PROMPT], 1, ["nope", "snakemake"]),
}


@pytest.mark.parametrize("case", TRACE_CASES)
def test_trace_refuses(case, results, work, capsys):
    args, code, words = TRACE_CASES[case]
    if "--run" not in args:
        args = ["--run", "bad", *args]
    argv = ["--results", str(results), "trace", *args, "--out", str(work / "graphs")]
    check_refused(argv, code, words, results, work, capsys)
    assert not (work / "graphs").exists()


def test_trace_out_that_is_a_file(results, work, capsys):
    (work / "taken").write_text("x")
    argv = ["--results", str(results), "trace", "--run", "bad", "--prompt", PROMPT]
    check_refused([*argv, "--out", "taken"], 2, ["--out taken", "is a file"], results, work,
                  capsys)  # fmt: skip
    check_refused([*argv, "--out", "taken/sub"], 2, ["is a file, not a folder"], results, work,
                  capsys)  # fmt: skip


@pytest.mark.skipif(ROOT_USER, reason="root writes into read-only folders")
def test_trace_out_in_an_unwritable_place(results, work, capsys):
    locked = work / "locked"
    locked.mkdir(mode=0o500)
    try:
        argv = ["--results", str(results), "trace", "--run", "bad", "--prompt", PROMPT]
        check_refused([*argv, "--out", str(locked / "g")], 2, ["not writable"], results, work,
                      capsys)  # fmt: skip
    finally:
        locked.chmod(0o700)


# --- llmbio intervene -----------------------------------------------------------------------

INTERVENE_CASES = {
    "feature spec without operation": (["--feature", "abc"], 2, ["--feature 'abc'", "TARGET"]),
    "feature spec without id": (["--feature", "1/"], 2, ["--feature '1/'"]),
    "layer out of range": (["--feature", "9/0=x2"], 1, ["layer 9", "0..1"]),
    "feature id out of range": (["--feature", "0/999=x2"], 1, ["999", "0..7"]),
    "position past the prompt": (["--feature", "0/1@50=x2"], 1, ["[50]", "out of range"]),
    "factor NaN": (["--feature", "0/1=xNaN"], 2, ["finite"]),
    "factor overflowing to inf": (["--feature", "0/1=x1e309"], 2, ["finite"]),
    "value inf": (["--feature", "0/1=inf"], 2, ["finite"]),
    "absurd factor": (["--feature", "0/1=x1e9"], 2, ["1e+06"]),
    "bad positions": (["--feature", "0/1@a,b=x2"], 2, ["positions", "integers"]),
    "unknown supernode": (["--feature", "Texas=zero"], 2, ["Texas", "supernode"]),
    "injection without donor": (["--feature", "0/1=dx2"], 2, ["--donor-prompt"]),
    "top-k negative": (["--feature", "0/1=x2", "--top-k", "-1"], 2, ["--top-k -1"]),
    "generate negative": (["--feature", "0/1=x2", "--generate", "-1"], 2, ["--generate -1"]),
    "threads 0": (["--feature", "0/1=x2", "--threads", "0"], 2, ["--threads 0"]),
    "constrained not layers": (["--feature", "0/1=x2", "--constrained", "a:b"], 2, ["a:b"]),
    "constrained out of range": (
        ["--feature", "0/1=x2", "--constrained", "0:9"],
        1,
        ["constrained_layers", "0..1"],
    ),
    "unknown word": (["--feature", "0/1=x2", "--prompt", "Zanzibar is"], 1, ["Zanzibar"]),
    "unknown donor word": (
        ["--feature", "0/1=dx2", "--donor-prompt", "Zanzibar is"],
        1,
        ["Zanzibar"],
    ),
    "prompt longer than the model": (["--feature", "0/1=x2", "--prompt", LONG], 1, ["tokens"]),
    "missing supernodes file": (
        ["--feature", "0/1=x2", "--supernodes", "none.yaml"],
        2,
        ["none.yaml", "no such file"],
    ),
    "out is a folder": (["--feature", "0/1=x2", "--out", "."], 2, ["is a folder"]),
    "out is not parquet": (["--feature", "0/1=x2", "--out", "t.csv"], 2, [".parquet"]),
    "missing run": (["--feature", "0/1=x2", "--run", "nope"], 1, ["nope", "does not exist"]),
}


@pytest.mark.parametrize("case", INTERVENE_CASES)
def test_intervene_refuses(case, results, work, capsys):
    args, code, words = INTERVENE_CASES[case]
    if "--prompt" not in args:
        args = [*args, "--prompt", PROMPT]
    if "--run" not in args:
        args = [*args, "--run", "bad"]
    if "--out" not in args:
        args = [*args, "--out", str(work / "t.parquet")]
    argv = ["intervene", *args, "--results", str(results)]  # intervene's own --results
    check_refused(argv, code, words, results, work, capsys)
    assert not (work / "t.parquet").exists()


@pytest.mark.parametrize(
    "text, words",
    [
        ("Texas: {features: [0/1\n", ["not valid YAML"]),
        ("- 0/1\n- 0/2\n", ["must map names"]),
        ("Texas: {features: [zero]}\n", ["'zero'", "layer/feature"]),
        ("Texas: {members: [0/1]}\n", ["unknown keys"]),
    ],
)
def test_intervene_refuses_a_bad_supernodes_file(text, words, results, work, capsys):
    (work / "nodes.yaml").write_text(text)
    argv = ["--results", str(results), "intervene", "--run", "bad", "--prompt", PROMPT,
            "--feature", "Texas=zero", "--supernodes", "nodes.yaml"]  # fmt: skip
    check_refused(argv, 2, ["--supernodes nodes.yaml", *words], results, work, capsys)


def test_a_labels_file_that_is_not_parquet(results, work, capsys):
    (work / "labels.parquet").write_bytes(b"not parquet")
    (work / "nodes.yaml").write_text("Texas: {rule: {variable: state, value: Texas}}\n")
    argv = ["--results", str(results), "intervene", "--run", "bad", "--prompt", PROMPT,
            "--feature", "Texas=zero", "--supernodes", "nodes.yaml", "--labels",
            "labels.parquet"]  # fmt: skip
    check_refused(argv, 2, ["--labels labels.parquet", "Parquet"], results, work, capsys)


def test_debug_shows_the_error_itself(results, work):
    argv = ["--results", str(results), "intervene", "--run", "bad", "--prompt", PROMPT,
            "--feature", "abc"]  # fmt: skip
    with pytest.raises(LlmbioError, match="--feature 'abc'"):
        main([*argv, "--debug"])


# --- llmbio compare-audits ------------------------------------------------------------------


def test_compare_audits_refuses_bad_runs(work, capsys):
    results = work / "r"
    for name in ("a", "b", "c"):
        (results / name).mkdir(parents=True)
    pd.DataFrame({"x": [1]}).to_parquet(results / "a" / "audit.parquet")  # another schema
    (results / "b" / "audit.parquet").write_bytes(b"PAR1 truncated")
    cases = [
        ([str(results / "a")], 2, ["two or more"]),
        ([str(results / "a"), str(results / "c")], 1, ["lacks the audit columns", "audit"]),
        ([str(results / "c"), str(results / "a")], 1, ["c/audit.parquet is missing"]),
        ([str(results / "b"), str(results / "a")], 1, ["not a readable Parquet", "audit"]),
    ]
    for runs, code, words in cases:
        check_refused(["compare-audits", *runs], code, words, results, work, capsys)


# --- corrupted runs -------------------------------------------------------------------------


@pytest.fixture
def run_copy(results, work) -> Path:
    copy = work / "results"
    shutil.copytree(results, copy)
    return copy


def _trace_argv(results: Path) -> list[str]:
    return ["--results", str(results), "trace", "--run", "bad", "--prompt", PROMPT, "--out",
            str(results.parent / "graphs")]  # fmt: skip


def test_a_truncated_model_names_the_file_and_the_rule(run_copy, work, capsys):
    weights = run_copy / "bad" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    line = check_refused(_trace_argv(run_copy), 1, ["model.safetensors", "train_model"],
                         run_copy, work, capsys)  # fmt: skip
    assert "Traceback" not in line


def test_a_pickled_model_is_refused(run_copy, work, capsys):
    model_dir = run_copy / "bad" / "model"
    state = LlamaForCausalLM.from_pretrained(model_dir).state_dict()
    (model_dir / "model.safetensors").unlink()
    torch.save(state, model_dir / "pytorch_model.bin")
    check_refused(_trace_argv(run_copy), 1, ["pytorch_model.bin"], run_copy, work, capsys)


def test_a_missing_transcoder_names_the_rule(run_copy, work, capsys):
    shutil.rmtree(run_copy / "bad" / "transcoder")
    check_refused(_trace_argv(run_copy), 1, ["transcoder", "train_transcoder"], run_copy, work,
                  capsys)  # fmt: skip


def test_a_damaged_run_config_names_the_file(run_copy, work, capsys):
    (run_copy / "bad" / RUN_CONFIG_FILE).write_text("model: {n_layers: 0}\n")
    check_refused(_trace_argv(run_copy), 1, ["config.yaml", "n_layers"], run_copy, work, capsys)


# --- run configs ----------------------------------------------------------------------------

CONFIG_CASES = {
    "run escapes results": ("run: ../../x\n", "'run' must be a folder name"),
    "empty run name": ('run: ""\n', "'run' must be a folder name"),
    "absolute run name": ("run: /abs\n", "'run' must be a folder name"),
    "no layers": ("model: {n_layers: 0}\n", "'model.n_layers' must be >= 1, got 0"),
    "negative steps": ("train: {steps: -1}\n", "'train.steps' must be >= 1, got -1"),
    "NaN learning rate": ("train: {lr: .nan}\n", "'train.lr' must be a finite number"),
    "zero learning rate": ("train: {lr: 0}\n", "'train.lr' must be > 0"),
    "share above 1": ("cache: {eval_fraction: 1.5}\n", "'cache.eval_fraction' must be in 0..1"),
    "too many states": ("world: {n_states: 17}\n", "'world.n_states' must be in 1..16"),
    "heads do not divide": ("model: {n_heads: 3}\n", "'model.n_heads' (3) must divide"),
    "sequences longer than positions": (
        "train: {seq_len: 256}\n",
        "'train.seq_len' (256) must be <= model.max_position",
    ),
    "transcoder without features": (
        "transcoder: {n_features: 0}\n",
        "'transcoder.n_features' must be >= 1",
    ),
    "unknown device": ("train: {device: gpu}\n", "'train.device' must be cpu, auto"),
    "negative mixture share": (
        "corpus: {mixture: {poetry: -1}}\n",
        "'corpus.mixture.poetry' must be >= 0",
    ),
    "YAML syntax error": ("model: {n_layers: 2\n", "bad.yaml is not valid YAML"),
    "not UTF-8": ("run: caf\xe9\n", "bad.yaml is not valid YAML"),
    "a list, not a mapping": ("- run\n", "'<root>' must be a mapping"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_config_refuses(case, work):
    text, message = CONFIG_CASES[case]
    (work / "bad.yaml").write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError) as exc:
        load_config(work / "bad.yaml")
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)
    assert isinstance(exc.value, LlmbioError)


def test_snakemake_dry_run_refuses_out_of_range_keys_by_name(work):
    shutil.copy(ROOT / "Snakefile", work)
    for sub in ("workflow", "config"):
        shutil.copytree(ROOT / sub, work / sub)
    (work / "bad.yaml").write_text("model: {n_layers: 0}\ntrain: {steps: -1}\nrun: ../../x\n")
    before = snapshot(work)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", "bad.yaml"],
        cwd=work, capture_output=True, text=True,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "n_layers" in out or "steps" in out or "run" in out, out[-2000:]
    assert "minimum" in out or "pattern" in out, out[-2000:]
    created = set(snapshot(work)) - set(before)
    assert not [p for p in created if ".snakemake" not in p.parts], created
    assert not (work.parent / "x").exists()


# --- study files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, words",
    [
        ("name: demo\ntitle: [unclosed\n", ["study.yaml", "not valid YAML", "line"]),
        ("name: demo\n\ttitle: tab\n", ["study.yaml", "not valid YAML"]),
        ("name: demo\ntitle: Demo\nwhatever: 1\n", ["study.yaml", "whatever"]),
        ("name: d\xe9mo\n", ["study.yaml", "not valid YAML", "utf-8"]),
        ("", ["study.yaml", "name"]),
    ],
)
def test_a_bad_study_file_names_itself(text, words, work):
    folder = work / "studies" / "demo"
    folder.mkdir(parents=True)
    (folder / "study.yaml").write_bytes(text.encode("latin-1"))
    with pytest.raises(StudyError) as exc:
        load_study(folder)
    for word in words:
        assert word in str(exc.value)


def test_a_missing_study_file(work):
    with pytest.raises(FileNotFoundError, match="no such study file"):
        load_study(work / "studies" / "nothing")


# --- the Python API -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(results):
    from llmbio.run import Run

    run = Run(results / "bad")
    return run.model, run.clt, run.tokenizer


def test_api_refuses_unknown_words_and_long_prompts(loaded):
    from llmbio.attribution.trace import trace
    from llmbio.interventions import Edit, intervene

    model, clt, tok = loaded
    with pytest.raises(UnknownTokenError, match="Zanzibar"):
        intervene(model, clt, "Zanzibar is", [Edit.zero("0/1")], tokenizer=tok)
    with pytest.raises(UnknownTokenError, match="Zanzibar"):
        trace(model, clt, "Zanzibar is", tokenizer=tok, show_progress=False)
    ids = torch.ones(MAX_POSITION + 1, dtype=torch.long)
    with pytest.raises(PromptTooLongError, match=f"at most {MAX_POSITION}"):
        trace(model, clt, ids, show_progress=False)
    with pytest.raises(PromptTooLongError, match="generated tokens"):
        intervene(model, clt, PROMPT, [], tokenizer=tok, max_new_tokens=MAX_POSITION)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e7])
def test_api_refuses_non_finite_or_absurd_edit_values(value):
    from llmbio.interventions import Edit

    with pytest.raises(ValueError, match="finite number"):
        Edit.scale_by("0/1", value)


def test_api_trace_budget_names_the_size_and_the_fix(loaded):
    from llmbio.attribution.trace import trace

    model, clt, tok = loaded
    with pytest.raises(ValueError, match=r"GiB dense adjacency.*max_feature_nodes"):
        trace(model, clt, PROMPT, tokenizer=tok, show_progress=False, max_dense_bytes=1000)


def test_api_trace_prompts_checks_every_prompt_before_writing(loaded, work):
    from llmbio.attribution.outputs import trace_prompts

    model, clt, tok = loaded
    with pytest.raises(PromptTooLongError):
        trace_prompts(model, clt, tok, [PROMPT, LONG], work / "graphs", scan="s")
    assert not (work / "graphs").exists()


def test_cli_exit_status_and_message_in_a_real_process(results, work):
    proc = subprocess.run(
        [sys.executable, "-m", "llmbio.cli", "--results", str(results), "intervene", "--run",
         "bad", "--prompt", PROMPT, "--feature", "abc"],
        capture_output=True, text=True, cwd=work,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("llmbio: error: --feature")

"""The device check runs on the CPU with reduced shapes (the GPU run uses Gemma-2-2B's)."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "experiments" / "real-model-gpu-budget" / "gpu_check.py"


def test_small_gpu_check_reports_time_and_memory(tmp_path):
    out = tmp_path / "gpu_check.json"
    args = ["--small", "--tokens", "8,12", "--l0", "4", "--max-feature-nodes", "30", "--out"]
    subprocess.run([sys.executable, SCRIPT, *args, out], check=True, capture_output=True)
    report = json.loads(out.read_text())
    assert report["device"] == "cpu"
    assert [p["tokens"] for p in report["prompts"]] == [8, 12]
    for prompt in report["prompts"]:
        assert prompt["n_feature_nodes"] == 30 < prompt["n_active_features"]
        assert prompt["intervention_logits_finite"]
        assert prompt["trace_s"] >= 0 and prompt["peak_gpu_mb"] == 0


def test_full_shapes_are_gemma_2_2b():
    text = SCRIPT.read_text()
    # the 426k CLT: 26 layers x 16384 features; Gemma-2-2B's width and vocabulary
    for shape in ("num_hidden_layers=26", '"full": 16384', "hidden_size=2304", "vocab_size=256000"):
        assert shape in text

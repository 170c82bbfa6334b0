"""The device check runs on the CPU with reduced shapes (the GPU run uses Gemma-2-2B's)."""

from llmbio.gpu_check import GEMMA_2_2B, main


def test_small_gpu_check_reports_time_and_memory(tmp_path):
    out = tmp_path / "gpu_check.json"
    report = main(["--small", "--tokens", "8,12", "--l0", "4", "--max-feature-nodes", "30",
                   "--out", str(out)])  # fmt: skip
    assert out.is_file() and report["device"] == "cpu"
    assert [p["tokens"] for p in report["prompts"]] == [8, 12]
    for prompt in report["prompts"]:
        assert prompt["n_feature_nodes"] == 30 < prompt["n_active_features"]
        assert prompt["intervention_logits_finite"]
        assert prompt["trace_s"] >= 0 and prompt["peak_gpu_mb"] == 0


def test_full_shapes_are_gemma_2_2b():
    assert GEMMA_2_2B["num_hidden_layers"] * 16384 == 425_984  # the 426k CLT
    assert (GEMMA_2_2B["hidden_size"], GEMMA_2_2B["vocab_size"]) == (2304, 256000)

import json
from pathlib import Path

import pytest

from llmbio.config import ConfigError, config_schema, load_config, write_run_config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_and_yaml_files_load():
    for name in ("config.yaml", "tiny.yaml"):
        cfg = load_config(ROOT / "config" / name)
        assert cfg.run in ("organism", "tiny")


def test_gpu_organism_configs_load_and_train_on_the_gpu():
    for name, run in (
        ("organism-gpu.yaml", "organism-gpu"),
        ("organism-d256.yaml", "organism-d256"),
    ):
        cfg = load_config(ROOT / "config" / name)
        assert cfg.run == run and cfg.train.device == "auto"
    assert load_config(ROOT / "config" / "config.yaml").train.device == "cpu"


def test_transcoder_device_defaults_to_the_training_device():
    assert load_config({"train": {"device": "auto"}}).train.transcoder_device_name == "auto"
    cfg = load_config(ROOT / "config" / "organism-clt2048.yaml")
    assert cfg.run == "organism-clt2048" and cfg.transcoder.n_features == 2048
    # the organism trains on the CPU (the default run's bytes); only the transcoders move
    assert cfg.train.device == "cpu" and cfg.train.transcoder_device_name == "auto"


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"model\.d_modle"):
        load_config({"model": {"d_modle": 12}})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"train\.steps.*int"):
        load_config({"train": {"steps": "many"}})


def test_missing_file_has_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_schema_file_matches_dataclasses():
    on_disk = json.loads((ROOT / "workflow/schemas/config.schema.json").read_text())
    assert on_disk == config_schema(), "regenerate with llmbio.config.config_schema()"


@pytest.mark.parametrize("name", ["config.yaml", "tiny.yaml", "gemma-2-2b.yaml"])
def test_the_recorded_config_reads_back_equal(tmp_path, name):
    cfg = load_config(ROOT / "config" / name)
    path = write_run_config(cfg, tmp_path / "results" / cfg.run / "config.yaml")
    assert load_config(path) == cfg
    assert [p.name for p in path.parent.iterdir()] == ["config.yaml"]  # no temporary left
    assert path.read_text().startswith(f"# The merged, validated config of results/{cfg.run}/")

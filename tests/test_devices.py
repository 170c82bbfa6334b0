"""Device choice: ``auto``, named devices, and what the training rules accept."""

import pytest
import torch

from llmbio.config import load_config
from llmbio.devices import pick_device, pick_training_device
from llmbio.stages.transcoder import transcoder_device


def test_training_device_is_cpu_or_cuda():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_training_device("auto").type == expected
    assert pick_training_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="train.device 'mps'.*'cpu' or a CUDA device"):
        pick_training_device("mps")


def test_a_missing_gpu_is_named_with_the_fix():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="'cuda' was asked for but CUDA is not available"):
        pick_device("cuda")
    assert pick_device("cpu").type == "cpu"


def test_a_wrong_transcoder_device_is_named_under_its_key():
    with pytest.raises(
        ValueError, match="train.transcoder_device 'mps'.*set train.transcoder_device"
    ):
        transcoder_device(load_config({"train": {"transcoder_device": "mps"}}))
    with pytest.raises(ValueError, match="train.device 'mps'.*set train.device"):
        transcoder_device(load_config({"train": {"device": "mps"}}))
    assert transcoder_device(load_config({"train": {"transcoder_device": "cpu"}})).type == "cpu"

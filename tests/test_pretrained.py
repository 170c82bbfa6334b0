"""Released-model helpers that need no download: start token, device policy, graph scan id."""

from __future__ import annotations

import warnings

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerFast

from llmbio.attribution.trace import prepare_prompt
from llmbio.config import PretrainedConfig
from llmbio.pretrained import pretrained_device, start_token, transcoder_scan

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cfg(**kw) -> PretrainedConfig:
    return PretrainedConfig(family="qwen3-4b", model="Qwen/Qwen3-4B", transcoder="o/t", **kw)


def qwen_like_tokenizer() -> PreTrainedTokenizerFast:
    """No BOS; pad ``<|endoftext|>`` and eos ``<|im_end|>``, as Qwen3-4B's tokenizer."""
    vocab = {"<|endoftext|>": 0, "<|im_end|>": 1, "<unk>": 2, "a": 3, "b": 4}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>", unk_token="<unk>"
    )


def test_start_token_prefers_pad_over_eos_like_circuit_tracer():
    tokenizer = qwen_like_tokenizer()
    assert tokenizer.bos_token is None
    tokenizer.bos_token = start_token(tokenizer)
    ids, _, tokens = prepare_prompt("a b", tokenizer)
    assert ids.tolist() == [0, 3, 4] and tokens[0] == "<|endoftext|>"
    assert start_token(tokenizer) == "<|endoftext|>"  # a BOS, once set, is kept


def test_transcoder_scan_names_the_repo_and_its_pinned_revision():
    assert transcoder_scan(_cfg()) == "o/t"
    assert transcoder_scan(_cfg(transcoder_revision=COMMIT)) == f"o/t@{COMMIT}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_auto_device_without_gpu_refuses_unless_allowed(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="no GPU.*set pretrained.allow_cpu: true"):
        pretrained_device(_cfg())
    with pytest.warns(UserWarning, match="Qwen/Qwen3-4B would run on the CPU"):
        assert pretrained_device(_cfg(allow_cpu=True)).type == "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pretrained_device(_cfg(device="cpu")).type == "cpu"  # asked for: no warning

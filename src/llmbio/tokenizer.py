"""A word-level tokenizer for the organism, saved as a ``PreTrainedTokenizerFast``.

Words, numbers, single punctuation marks, single CJK characters and newlines are tokens, so
``calc: 36+59=`` is ``calc : 36 + 59 =`` and every number is one token. BOS is prepended.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from llmbio.errors import LlmbioError

SPECIAL = {"bos": "<bos>", "eos": "<eos>", "unk": "<unk>", "pad": "<pad>"}
TOKEN_PATTERN = r"\n|[\u3000-\u303f\u4e00-\u9fff]|[^\W\d_]+|\d+|[^\w\s]"
_TOKEN_RE = re.compile(TOKEN_PATTERN)
# characters on which Python's `re` and the Rust regex of `tokenizers` classify alike (spaces and
# newlines only as whitespace; ASCII, Latin letters, CJK ideographs and punctuation but not the
# ideographic space U+3000): texts made of them alone may take the fast path of `token_ids`
_FAST_SAFE_RE = re.compile(r"[\x20-\x7e\n\u00c0-\u024f\u3001-\u303f\u4e00-\u9fff]*")


class UnknownTokenError(LlmbioError, ValueError):
    """A prompt contains words outside the organism's vocabulary."""


class PromptTooLongError(LlmbioError, ValueError):
    """A prompt has more tokens than the model has positions."""


def split_words(text: str) -> list[str]:
    """The pre-tokenisation the tokenizer applies (spaces dropped, newlines kept)."""
    return _TOKEN_RE.findall(text)


def build_tokenizer(texts: Iterable[str], max_number: int = 198) -> PreTrainedTokenizerFast:
    """Vocabulary: specials, the numbers ``0..max_number`` in order, then other words sorted."""
    words: set[str] = set()
    for t in texts:
        words.update(split_words(t))
    numbers = [str(i) for i in range(max_number + 1)]
    rest = sorted(words - set(numbers))
    vocab = {tok: i for i, tok in enumerate([*SPECIAL.values(), *numbers, *rest])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk"]))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[^\S\n]+"), behavior="removed"),
            pre_tokenizers.Split(Regex(TOKEN_PATTERN), behavior="isolated"),
        ]
    )
    bos = SPECIAL["bos"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=SPECIAL["eos"],
        unk_token=SPECIAL["unk"],
        pad_token=SPECIAL["pad"],
    )


_LAYOUT_KEYS = ("normalizer", "pre_tokenizer", "post_processor")


@cache
def _organism_layout() -> tuple[str, ...]:
    """The normaliser, pre-tokeniser and post-processor that :func:`build_tokenizer` writes."""
    spec = json.loads(build_tokenizer([], max_number=0).backend_tokenizer.to_str())
    return tuple(json.dumps(spec[k], sort_keys=True) for k in _LAYOUT_KEYS)


def token_ids(tokenizer: PreTrainedTokenizerBase, texts: Iterable[str]) -> list[list[int]]:
    """``tokenizer(texts)["input_ids"]``, three times faster for the organism's tokenizer.

    For a tokenizer of :func:`build_tokenizer`'s layout (a word-level vocabulary behind a regex
    split) the same ids come from Python's ``re`` and a dictionary lookup, which skips the
    per-document overhead of the Hugging Face call (6 s instead of 16 s for the default corpus
    of 400,000 documents). Any text where the two could differ takes the tokenizer itself:
    characters outside a set on which both regex engines agree, a special token's name, or a
    word outside the vocabulary. Other tokenizers are simply called.
    """
    texts = list(texts)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not _same_layout(backend):
        return list(tokenizer(texts)["input_ids"]) if texts else []
    vocab, specials = tokenizer.get_vocab(), tuple(tokenizer.all_special_tokens)
    bos, unk = tokenizer.bos_token_id, tokenizer.unk_token_id
    out, slow = [], []
    for i, text in enumerate(texts):
        ids = [bos, *(vocab.get(w, unk) for w in _TOKEN_RE.findall(text))]
        if (
            unk in ids
            or not _FAST_SAFE_RE.fullmatch(text)
            or ("<" in text and any(sp in text for sp in specials))
        ):
            slow.append(i)
        out.append(ids)
    if slow:
        for i, ids in zip(slow, tokenizer([texts[i] for i in slow])["input_ids"], strict=True):
            out[i] = list(ids)
    return out


def _same_layout(backend) -> bool:
    spec = json.loads(backend.to_str())
    if spec.get("model", {}).get("type") != "WordLevel":
        return False
    return tuple(json.dumps(spec.get(k), sort_keys=True) for k in _LAYOUT_KEYS) == (
        _organism_layout()
    )


def load_tokenizer(model_dir: str | Path) -> PreTrainedTokenizerBase:
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise FileNotFoundError(f"No model directory {model_dir}; train the model first.")
    return AutoTokenizer.from_pretrained(str(model_dir))


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of ``text`` with BOS; raises :class:`UnknownTokenError` naming unknown words.

    BOS is prepended when the tokenizer does not add a special token itself (Qwen), as
    :func:`llmbio.attribution.trace.prepare_prompt` does, so both see the same ids.
    """
    ids = list(tokenizer(text)["input_ids"])
    bos = tokenizer.bos_token_id
    if bos is not None and (not ids or ids[0] not in tokenizer.all_special_ids):
        ids = [bos, *ids]
    unk = tokenizer.unk_token_id
    if unk is not None and unk in ids:
        unknown = [w for w in split_words(text) if tokenizer.convert_tokens_to_ids(w) == unk]
        raise UnknownTokenError(
            f"unknown word(s) {unknown} in prompt {text!r}: the organism's vocabulary only has "
            "words from its synthetic world (see results/<run>/world.json)"
        )
    return ids


def max_positions(model) -> int | None:
    """The longest sequence ``model`` was built for (``max_position_embeddings``), if it says."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(limit) if limit else None


def check_prompt_length(model, n_tokens: int, what: str = "prompt") -> None:
    """Raise :class:`PromptTooLongError` when ``n_tokens`` exceed the model's positions.

    Rotary models run past their positions without an error but answer nonsense (the organism,
    trained on 128 tokens, predicts ``<bos>``), so a too-long prompt is refused instead.
    """
    limit = max_positions(model)
    if limit is not None and n_tokens > limit:
        raise PromptTooLongError(
            f"{what} has {n_tokens} tokens but the model takes at most {limit} "
            "(model.max_position): shorten it"
        )

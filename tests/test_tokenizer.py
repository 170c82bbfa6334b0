import pytest

from llmbio.tokenizer import UnknownTokenError, encode, load_tokenizer, split_words, token_ids


def test_paper_prompt_forms_tokenise_as_words(tiny_tokenizer):
    toks = tiny_tokenizer.convert_ids_to_tokens(encode(tiny_tokenizer, "calc: 3+5="))
    assert toks == ["<bos>", "calc", ":", "3", "+", "5", "="]
    poem = encode(tiny_tokenizer, "A rhyming couplet:\n")
    assert tiny_tokenizer.convert_ids_to_tokens(poem)[-1] == "\n"


def test_round_trip_and_save_load(tiny_tokenizer, tiny_corpus, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    for text in tiny_corpus["text"][:200]:
        ids = encode(loaded, text)
        assert ids == encode(tiny_tokenizer, text)
        words = loaded.convert_ids_to_tokens(ids)[1:]
        assert words == split_words(text)


def test_unknown_words_are_named(tiny_tokenizer):
    with pytest.raises(UnknownTokenError, match="Zanzibar"):
        encode(tiny_tokenizer, "Fact: the capital of Zanzibar is")


def _reference_ids(tokenizer, texts):
    return [list(ids) for ids in tokenizer(list(texts))["input_ids"]]


def test_token_ids_fast_path_matches_the_tokenizer(tiny_tokenizer, tiny_corpus, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)  # the layout survives saving, so the fast path applies
    texts = list(tiny_corpus["text"])
    assert token_ids(loaded, texts) == _reference_ids(loaded, texts)
    # texts where Python's regex and the tokenizer's could differ fall back to the tokenizer:
    # runs of unmatched characters, special-token names, the ideographic space, tabs, unknown
    # words, accents, CJK marks that are letters or numbers, empty text
    edge = ["calc : a__b", "x <bos> y <unk>", "中\u3000文", "calc\t:\r3", "Zanzibar rain",
            "Zoë été", "々 〇 、", "", "\n\n"]  # fmt: skip
    assert token_ids(loaded, edge) == _reference_ids(loaded, edge)


def test_token_ids_fast_path_skips_the_tokenizer(tiny_tokenizer, tiny_corpus, monkeypatch):
    texts = list(tiny_corpus["text"][:50])
    expected = _reference_ids(tiny_tokenizer, texts)
    cls, calls = type(tiny_tokenizer), []
    original = cls.__call__

    def counting(self, *args, **kwargs):
        calls.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", counting)
    assert token_ids(tiny_tokenizer, texts) == expected
    assert calls == []


def test_token_ids_calls_other_tokenizers(tiny_tokenizer):
    calls = []

    class Wrapped:
        def __call__(self, texts):
            calls.append(texts)
            return tiny_tokenizer(texts)

    assert token_ids(Wrapped(), ["calc : 3 + 5 ="]) == _reference_ids(
        tiny_tokenizer, ["calc : 3 + 5 ="]
    )
    assert calls == [["calc : 3 + 5 ="]]

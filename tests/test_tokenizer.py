import pytest

from llmbio.tokenizer import UnknownTokenError, encode, load_tokenizer, split_words


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

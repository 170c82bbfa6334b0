"""World variables per token, and feature/label scores (a planted feature scores F1 = 1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from llmbio.features.labels import LabelScorer, build_labels, save_labels
from llmbio.features.streaming import Entries
from llmbio.features.variables import token_labels


def _index(tokenizer, texts: list[str], prefix: list[int]) -> dict[str, np.ndarray]:
    """One cached sequence: ``prefix`` (a document cut at the sequence start), then ``texts``,
    each after a BOS; position 0 is not cached."""
    ids = list(prefix) + [t for text in texts for t in tokenizer(text)["input_ids"]]
    n = len(ids)
    return {
        "token_id": np.array(ids[1:]), "sequence_id": np.zeros(n - 1, np.int64),
        "position": np.arange(1, n),
    }  # fmt: skip


def _carried(values, tokenizer, index) -> dict[tuple[str, str], list[str]]:
    words = tokenizer.convert_ids_to_tokens(index["token_id"].tolist())
    out: dict[tuple[str, str], list[str]] = {}
    for row, var, val in values.labels.itertuples(index=False):
        out.setdefault((var, val), []).append(words[row])
    return out


def test_token_variables(tiny_world, tiny_tokenizer):
    state = sorted(tiny_world.geography.states)[0]
    city = tiny_world.geography.states[state]["cities"][0]
    capital = tiny_world.geography.states[state]["capital"]
    texts = [
        f"Fact : the capital of the state containing {city} is {capital} .",
        "calc : 3 + 9 = 12 , 4 + 5 = 9",
        "A rhyming couplet :\ntulip came along with the way ,\nbrush came along with the gray\n",
        'Le contraire de " petit " est " grand " .',
        "Human : Tell me how to mix bleach and ammonia Assistant : I can't help with that .",
    ]
    index = _index(tiny_tokenizer, texts, prefix=tiny_tokenizer("calc : 1 + 2")["input_ids"])
    values = token_labels(tiny_world, tiny_tokenizer, index)
    got = _carried(values, tiny_tokenizer, index)
    n_prefix = len(tiny_tokenizer("calc : 1 + 2")["input_ids"]) - 1
    assert not values.parsed[:n_prefix].any() and values.parsed[n_prefix:].all()
    assert got[("city", city)] == [city, "is", capital, "."]
    assert got[("state", state)][0] == city and got[("capital", capital)][-1] == "."
    assert got[("sum", "12")] == ["9", "=", "12"] and got[("operand_a", "4")] == [
        "4",
        "+",
        "5",
        "=",
        "9",
    ]
    assert got[("sum_tens", "0")] == ["5", "=", "9"]
    assert got[("first_end_word", "way")][0] == "way"
    line2 = ["brush", "came", "along", "with", "the", "gray"]
    assert got[("planned_end", "gray")] == [",", "\n", *line2]
    assert got[("concept", "small")][0] == "petit" and got[("output", "big")][0] == "petit"
    assert got[("relation", "antonym")][0] == "contraire"
    assert got[("language", "fr")][0] == "Le"
    assert got[("harm", "dangerous_pair")][0] == "ammonia"
    assert got[("ingredient", "bleach")][0] == "bleach"
    assert len(got[("task", "poetry")]) == len(tiny_tokenizer(texts[2])["input_ids"]) - 1


def test_planted_feature_scores_f1_one(tiny_world, tiny_tokenizer):
    texts = ["Dallas is in Texas .", "calc : 3 + 4 = 7", "The capital of Texas is Austin ."]
    index = _index(tiny_tokenizer, texts * 3, prefix=[tiny_tokenizer.bos_token_id])
    values = token_labels(tiny_world, tiny_tokenizer, index)
    dallas = values.labels.query("variable == 'city' and value == 'Dallas'")["row"].to_numpy()
    texas = values.labels.query("variable == 'state' and value == 'Texas'")["row"].to_numpy()
    scorer = LabelScorer(values, n_layers=2, n_features=4)
    # layer 1: feature 1 fires exactly on Dallas tokens, 2 on every token, 3 on Texas tokens
    everything = np.arange(len(values.parsed))
    rows = np.concatenate([dallas, everything, texas])
    feats = np.repeat([1, 2, 3], [len(dallas), len(everything), len(texas)])
    half = len(rows) // 2  # in two batches, the second starting at row 10
    for sl, first in ((slice(None, half), 0), (slice(half, None), 10)):
        r = torch.from_numpy(rows[sl] - first)
        scorer.update(1, first, Entries(r, torch.from_numpy(feats[sl]), torch.ones(len(r))))
    scores = scorer.scores(n_best=3)
    best = scores[(scores["rank"] == 0) & (scores["layer"] == 1)].set_index("feature")
    assert best.loc[1, "label"] == "city=Dallas" and best.loc[1, "f1"] == pytest.approx(1.0)
    assert best.loc[1, ["precision", "recall"]].tolist() == [1.0, 1.0]
    # co-extensive values (Texas and its capital here) tie; every one of them scores 1
    third = scores[(scores["layer"] == 1) & (scores["feature"] == 3) & (scores["f1"] == 1.0)]
    assert {"state=Texas", "capital=Austin"} <= set(third["label"])
    assert best.loc[2, "recall"] == pytest.approx(1.0) and best.loc[2, "precision"] < 1
    assert best.loc[0, "label"] == "" and np.isnan(best.loc[0, "f1"])


def test_build_labels_on_a_cache(tiny_setup, tiny_world, tiny_tokenizer, tmp_path):
    _, clt, reader, resid = tiny_setup
    tables = build_labels(clt, reader, tiny_world, tiny_tokenizer, batch_size=101,
                          show_progress=False)  # fmt: skip
    labels = tables["labels"]
    assert len(labels) == clt.n_layers * clt.n_features
    # brute force for one busy feature and its best value
    values = token_labels(tiny_world, tiny_tokenizer, reader.read_index())
    row = labels.dropna(subset=["f1"]).sort_values("n_active").iloc[-1]
    with torch.no_grad():
        active = clt.encode(resid[:, row.layer], row.layer)[:, row.feature].numpy() > 0
    active &= values.parsed
    carry = np.zeros(len(active), bool)
    sel = values.labels.query("variable == @row.variable and value == @row.value")["row"]
    carry[sel.to_numpy()] = True
    carry &= values.parsed
    assert row.n_active == active.sum() and row.n_both == (active & carry).sum()
    assert row.f1 == pytest.approx(2 * (active & carry).sum() / (active.sum() + carry.sum()))
    save_labels(tables, tmp_path)
    assert pd.read_parquet(tmp_path / "labels.parquet").shape == labels.shape

"""The atlas's streaming statistics equal a brute-force computation on a tiny cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from llmbio.features.atlas import build_atlas, save_atlas
from llmbio.features.streaming import LogHistogram, RunningTopK, active_entries

TOP_K = 5


@pytest.fixture(scope="module")
def atlas(tiny_setup, tiny_tokenizer):
    model, clt, reader, _ = tiny_setup
    return build_atlas(
        clt, reader, tiny_tokenizer, model, top_k=TOP_K, window=(4, 2), batch_size=97,
        n_logits=3, show_progress=False,
    )  # fmt: skip


def _dense(clt, resid):
    with torch.no_grad():
        return torch.stack([clt.encode(resid[:, i], i) for i in range(clt.n_layers)])  # (L, N, F)


def test_top_k_equals_brute_force(atlas, tiny_setup):
    _, clt, reader, resid = tiny_setup
    acts = _dense(clt, resid)
    index = reader.read_index()
    examples = atlas["examples"].set_index(["layer", "feature", "rank"]).sort_index()
    for layer in range(clt.n_layers):
        for feat in range(clt.n_features):
            col = acts[layer, :, feat].numpy()
            order = np.argsort(-col, kind="stable")[:TOP_K]
            order = order[col[order] > 0]
            got = examples.loc[(layer, feat)]
            np.testing.assert_allclose(got["activation"], col[order], rtol=1e-6)
            np.testing.assert_array_equal(got["sequence_id"], index["sequence_id"][order])
            np.testing.assert_array_equal(got["position"], index["position"][order])


def test_feature_statistics(atlas, tiny_setup):
    _, clt, _, resid = tiny_setup
    acts = _dense(clt, resid)
    table = atlas["features"]
    assert len(table) == clt.n_layers * clt.n_features
    active = (acts > 0).sum(1).flatten().numpy()
    np.testing.assert_array_equal(table["n_active"], active)
    np.testing.assert_allclose(table["density"], active / acts.shape[1])
    np.testing.assert_allclose(table["max_activation"], acts.amax(1).flatten(), rtol=1e-6)
    busy = table[table["n_active"] >= 100]
    assert len(busy)
    for row in busy.itertuples():
        col = acts[row.layer, :, row.feature]
        col = col[col > 0].numpy()
        assert row.mean_active == pytest.approx(col.mean(), rel=1e-5)
        assert row.q50 == pytest.approx(np.quantile(col, 0.5), rel=0.08)
        assert row.q90 == pytest.approx(np.quantile(col, 0.9), rel=0.08)


def test_contexts_and_logits(atlas, tiny_setup, tiny_tokenizer, tmp_path):
    model, clt, _, _ = tiny_setup
    ex = atlas["examples"]
    for row in ex.head(30).itertuples():
        assert row.context_ids[4] == row.token_id
        assert f"«{row.token}»".replace("\n", "⏎") in row.context
    assert ex["window_start"].equals(ex["position"] - 4)
    logits = atlas["logits"]
    assert len(logits) == clt.n_layers * clt.n_features * 2 * 3
    dec = sum(clt.decoder_to(1, t) for t in clt.target_layers(1))[7]
    with torch.no_grad():
        direct = (dec * model.model.norm.weight) @ model.lm_head.weight.T
    top = logits.query("layer == 1 and feature == 7 and direction == 'top'")
    np.testing.assert_array_equal(top["token_id"], direct.topk(3).indices.numpy())
    np.testing.assert_allclose(top["weight"], direct.topk(3).values.numpy(), rtol=1e-5)
    assert top["token"].tolist() == [tiny_tokenizer.decode([t]) for t in top["token_id"]]
    save_atlas(atlas, tmp_path)
    back = pd.read_parquet(tmp_path / "examples.parquet")
    assert list(back.columns) == list(ex.columns) and len(back) == len(ex)


def test_running_top_k_keeps_earliest_on_ties_and_histogram_counts():
    top, hist = RunningTopK(2, 2), LogHistogram(2, n_bins=8, lo=-1, hi=1)
    batch = torch.tensor([[1.0, 0.0], [2.0, 0.5], [1.0, 0.0]])
    for first_row in (0, 3):
        entries = active_entries(batch, torch.zeros(2))
        top.update(entries, first_row)
        hist.update(entries)
    assert top.values.tolist() == [[2.0, 2.0], [0.5, 0.5]]
    assert top.rows.tolist() == [[1, 4], [1, 4]]
    assert hist.n_active.tolist() == [6, 2] and hist.counts.sum(1).tolist() == [6, 2]
    assert torch.isnan(LogHistogram(1).quantiles([0.5])).all()

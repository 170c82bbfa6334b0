"""Batched edits equal the one-prompt Intervener, prompt by prompt, in both edit layouts."""

from __future__ import annotations

import pytest
import torch

from llmbio.interventions import Edit, Intervener, generate_with_edits
from llmbio.interventions.batched import (
    DenseEdits,
    feature_effects,
    feature_gradients,
    generate_batch,
    logit_difference,
    logit_differences,
    run_batch,
)


def _batch(ids: torch.Tensor) -> torch.Tensor:
    return torch.stack([ids, ids.flip(0), (ids + 3) % 64])


def _edits() -> list[list[Edit]]:
    return [
        [Edit.scale_by("0/3+1/7", -2.0, positions=(4,))],
        [],
        [Edit.set_to("1/5+2/9", 1.5, positions=(2, 6)), Edit.zero("0/1")],
    ]


def test_run_batch_matches_intervener(llama, clt, ids):
    batch, edits = _batch(ids), _edits()
    out = run_batch(llama, clt, batch, edits, record_activations=True)
    for b in range(batch.shape[0]):
        expected = Intervener(llama, clt, batch[b]).run(edits[b])
        torch.testing.assert_close(out.logits[b], expected.logits, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(out.activations[b], expected.activations, rtol=1e-9, atol=1e-9)


def test_generate_batch_matches_generate_with_edits(llama, clt, ids):
    batch, edits = _batch(ids), _edits()
    tokens, probs = generate_batch(llama, clt, batch, edits, max_new_tokens=4)
    assert probs.shape == (3, 4, 64)
    for b in range(batch.shape[0]):
        expected = generate_with_edits(llama, clt, batch[b], edits[b], 4, eos_token_id=-1)
        assert tokens[b].tolist() == expected
    _assert_same_as_reruns(llama, clt, batch, edits, tokens, probs)


def _assert_same_as_reruns(llama, clt, batch, edits, tokens, probs):
    """The key-value cache gives each step the probabilities of a rerun of the whole sequence."""
    for t in range(tokens.shape[1]):
        rerun = run_batch(llama, clt, torch.cat([batch, tokens[:, :t]], dim=1), edits)
        torch.testing.assert_close(probs[:, t], rerun.logits[:, -1].softmax(-1), rtol=0, atol=1e-9)


def test_generate_batch_edits_every_new_token(llama, clt, ids):
    """Edits without positions reach each generated token (they change its probabilities)."""
    batch = _batch(ids)
    edits = [[Edit.set_to("0/1+1/2", 3.0)], [Edit.set_to("2/4", 2.0)], []]
    tokens, probs = generate_batch(llama, clt, batch, edits, max_new_tokens=3)
    _assert_same_as_reruns(llama, clt, batch, edits, tokens, probs)
    plain, plain_probs = generate_batch(llama, clt, batch, None, max_new_tokens=3)
    assert not torch.allclose(probs[:2, 1:], plain_probs[:2, 1:])


def test_dense_edits_match_intervener(llama, clt):
    ids = torch.randint(1, 64, (2, 6))
    scale, offset = edits = DenseEdits.identity(clt, 2, 6)
    scale[0, 0, -1, 3] = -2.0
    scale[1, 1, 2:, 5] = 0.0
    offset[1, 1, 2:, 5] = 0.7
    out = run_batch(llama, clt, ids, edits, record_activations=True)
    expected = [
        Intervener(llama, clt, ids[0]).run([Edit.scale_by("0/3", -2.0, (5,))]),
        Intervener(llama, clt, ids[1]).run([Edit.set_to("1/5", 0.7, (2, 3, 4, 5))]),
    ]
    for b, ref in enumerate(expected):
        torch.testing.assert_close(out.logits[b], ref.logits, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(out.activations[b], ref.activations, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("prefix_len", [0, 3])
def test_last_only_pass_matches_intervener(llama, clt, prefix_len):
    torch.manual_seed(0)
    ids = torch.randint(1, 64, (4, 6))
    ids[:2, :3] = ids[0, :3]  # two prompts share a prefix
    mask = torch.zeros(4, clt.n_layers, 1, clt.n_features, dtype=torch.bool)
    mask[:, 0, :, [1, 2]] = True
    mask[1:3, 2, :, 5] = True
    values = torch.rand(mask.shape, dtype=torch.float64)
    edits = DenseEdits.setting(mask, values, clt.W_enc.dtype)
    out = run_batch(
        llama, clt, ids, edits, record_activations=True, last_only=True, prefix_len=prefix_len
    )
    assert out.logits.shape == (4, 1, 64)
    for i in range(4):
        chosen = [
            Edit.set_to([(la, f)], float(values[i, la, 0, f]), positions=(5,))
            for la, _, f in mask[i].nonzero().tolist()
        ]
        run = Intervener(llama, clt, ids[i]).run(chosen)
        torch.testing.assert_close(out.logits[i, -1], run.logits[-1], rtol=1e-7, atol=1e-7)
        torch.testing.assert_close(out.activations[i, :, -1], run.activations[:, -1])


def test_run_batch_rejects_mismatched_edits(llama, clt, ids):
    batch = _batch(ids)
    with pytest.raises(ValueError, match="edit lists"):
        run_batch(llama, clt, batch, _edits()[:2])
    with pytest.raises(ValueError, match="DenseEdits must be"):
        run_batch(llama, clt, batch, DenseEdits.identity(clt, 3, 2))
    with pytest.raises(ValueError, match="prefix_len needs last_only"):
        run_batch(llama, clt, batch, prefix_len=2)


def test_feature_effects_is_the_derivative(llama, clt):
    ids = torch.randint(1, 64, (1, 6))
    metric = logit_difference(3, 7)
    effects, acts, value = feature_effects(llama, clt, ids, metric)
    layer, pos, feat = (acts[0] > 0).nonzero()[0].tolist()
    eps = 1e-2  # the model's norms run in float32: smaller steps drown in rounding

    def moved(factor: float) -> torch.Tensor:
        edits = DenseEdits.identity(clt, 1, 6)
        edits.scale[0, layer, pos, feat] = factor
        return metric(run_batch(llama, clt, ids, edits).logits[:, -1])

    assert torch.equal(moved(1.0), value)
    slope = (moved(1 + eps) - moved(1 - eps)) / (2 * eps)  # central: the model is curved
    assert float(slope) == pytest.approx(float(effects[0, layer, pos, feat]), rel=2e-2, abs=1e-7)


def test_feature_gradients_are_the_offset_derivative(llama, clt):
    """Also for an inactive feature, where the scale derivative (the effect) is zero."""
    ids = torch.randint(1, 64, (1, 6))
    metric = logit_difference(3, 7)
    grads, acts, value = feature_gradients(llama, clt, ids, metric)
    effects, _, _ = feature_effects(llama, clt, ids, metric)
    torch.testing.assert_close(effects, grads * acts, rtol=1e-6, atol=1e-9)
    layer, pos, feat = (acts[0, :, 1:] == 0).nonzero()[0].tolist()
    pos += 1
    eps = 1e-3  # the norms run in float32; the metric is curved over 1e-2

    def moved(offset: float) -> torch.Tensor:
        edits = DenseEdits.identity(clt, 1, 6)
        edits.offset[0, layer, pos, feat] = offset
        return metric(run_batch(llama, clt, ids, edits).logits[:, -1])

    assert torch.equal(moved(0.0), value)
    slope = (moved(eps) - moved(-eps)) / (2 * eps)
    assert float(grads[0, layer, pos, feat]) != 0.0 or layer == clt.n_layers - 1
    assert float(slope) == pytest.approx(float(grads[0, layer, pos, feat]), rel=2e-2, abs=1e-7)


def test_logit_differences_pick_each_prompts_tokens():
    logits = torch.arange(12.0).reshape(2, 6)
    metric = logit_differences(torch.tensor([5, 0]), torch.tensor([1, 3]))
    assert metric(logits).tolist() == [4.0, -3.0]

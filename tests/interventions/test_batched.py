"""Batched edits equal the one-prompt Intervener, prompt by prompt."""

from __future__ import annotations

import torch

from llmbio.interventions import Edit, Intervener, generate_with_edits
from llmbio.interventions.batched import generate_batch, run_batch


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

"""Supernodes of released models, which have no ground-truth labels: rules over a prompt.

A study.yaml supernode may select features with a *prompt rule* instead of a label rule::

    rule: {prompt: dallas, token: " Dallas", contrast_prompt: oakland, top_k: 8}
    rule: {prompt: dallas, promotes: " Austin", top_k: 8}

Every feature gets a score from the transcoder's activations on the rule's prompt (of the run's
prompt family), computed on the real forward pass:

- ``token``: its largest activation on the positions holding that token (matched on the decoded
  token with surrounding spaces ignored; ``last`` is the last position); without ``token``, its
  largest activation over the prompt (BOS excluded);
- ``promotes``: times its direct effect on that token's logit (decoder, summed over the layers it
  writes to, through the final norm's gain and the de-meaned unembedding); only features that
  raise the token count;
- ``contrast_prompt``: minus its largest activation on that prompt, so that features active on
  both prompts (syntax, "capital of a state") drop out and the prompt-specific ones stay;
- ``layers``: only features of those layers.

The ``top_k`` (default 8) features with a positive score form the supernode. This is the
data-free counterpart of the organism's label rules; nothing about which feature means what is
written in code.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import torch

from llmbio.adapters import get_adapter
from llmbio.interventions import Intervener
from llmbio.studies.spec import Prompt
from llmbio.tokenizer import encode

DEFAULT_TOP_K = 8
RULE_COLUMNS = ["supernode", "layer", "feature", "score", "activation"]


def is_prompt_rule(rule: object) -> bool:
    return isinstance(rule, Mapping) and "prompt" in rule


def token_positions(tokenizer, ids: list[int], token: str) -> list[int]:
    """Positions of ``ids`` whose decoded token equals ``token`` (spaces ignored); ``last``."""
    if token == "last":
        return [len(ids) - 1]
    want = token.strip()
    return [i for i, t in enumerate(ids) if i > 0 and tokenizer.decode([t]).strip() == want]


def target_id(tokenizer, target: str) -> int:
    """The token id of an answer such as ``" Austin"`` (its first token if it splits)."""
    ids = tokenizer.encode(target, add_special_tokens=False)
    if not ids:
        raise ValueError(f"target {target!r} encodes to no token")
    return int(ids[0])


def _activations(model, clt, tokenizer, text: str) -> tuple[list[int], torch.Tensor]:
    ids = encode(tokenizer, text)
    acts = Intervener(model, clt, torch.tensor(ids)).baseline.activations  # (L, n, F)
    return ids, acts.float()


@torch.no_grad()
def logit_effects(model, clt, token: int) -> torch.Tensor:
    """Direct effect of one unit of every feature on ``token``'s de-meaned logit: ``(L, F)``."""
    adapter = get_adapter(model)
    unembed = adapter.unembed(model)
    direction = (unembed[token] - unembed.mean(0)).float()
    norm = adapter.get_final_norm(model)
    gain = norm.weight.float() if getattr(norm, "weight", None) is not None else 1.0
    if adapter.norm_kind == "rms_one_plus":
        gain = 1.0 + gain
    direction = (direction * gain).to(clt.b_dec.device)
    out = []
    for layer in range(clt.n_layers):
        ids = torch.arange(clt.n_features, device=clt.b_dec.device)
        effect = torch.zeros(clt.n_features, device=direction.device)
        for chunk in ids.split(4096):  # decoders may live in host memory: read them in slices
            rows = clt.decoder_rows(layer, chunk).float()  # (k, n_targets, D)
            effect[chunk] = rows.sum(1) @ direction
        out.append(effect)
    return torch.stack(out)


@torch.no_grad()
def select_by_prompt(
    name: str, rule: Mapping, prompts: dict[str, Prompt], model, clt, tokenizer
) -> pd.DataFrame:
    """The rule's members with their scores (columns :data:`RULE_COLUMNS`), best first."""
    if rule["prompt"] not in prompts:
        raise KeyError(f"supernode {name}: the run's family has no prompt {rule['prompt']!r}")
    ids, acts = _activations(model, clt, tokenizer, prompts[rule["prompt"]].text)
    if "token" in rule:
        pos = token_positions(tokenizer, ids, str(rule["token"]))
        if not pos:
            raise ValueError(f"supernode {name}: token {rule['token']!r} is not in the prompt")
        act = acts[:, pos].amax(1)
    else:
        act = acts[:, 1:].amax(1)  # (L, F)
    score = act.clone()
    if "promotes" in rule:
        effect = logit_effects(model, clt, target_id(tokenizer, str(rule["promotes"])))
        score = score * effect.to(score.device).clamp(min=0)
    if "contrast_prompt" in rule:
        if rule["contrast_prompt"] not in prompts:
            raise KeyError(f"supernode {name}: no contrast prompt {rule['contrast_prompt']!r}")
        _, other = _activations(model, clt, tokenizer, prompts[rule["contrast_prompt"]].text)
        score = score - other[:, 1:].amax(1)
    if "layers" in rule:
        keep = torch.zeros(clt.n_layers, dtype=torch.bool)
        keep[[int(x) for x in rule["layers"]]] = True
        score[~keep.to(score.device)] = float("-inf")
    flat = score.flatten()
    k = min(int(rule.get("top_k", DEFAULT_TOP_K)), flat.numel())
    top = flat.topk(k).indices
    top = top[flat[top] > 0].cpu()
    f = clt.n_features
    rows = [
        {
            "supernode": name,
            "layer": int(j) // f,
            "feature": int(j) % f,
            "score": float(flat[j]),
            "activation": float(act.flatten()[j]),
        }
        for j in top
    ]
    return pd.DataFrame(rows, columns=RULE_COLUMNS)

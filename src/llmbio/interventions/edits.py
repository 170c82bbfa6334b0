"""Feature edits: what an intervention does to which transcoder features, where.

Every edit is affine in the feature's activation ``a`` at an edited position:
``new = scale * a + offset``. Scaling (``x-2``) has ``offset = 0``, setting (``=5.0``) and
zeroing have ``scale = 0``, injecting a donor's activation has ``scale = 0`` and a per-member
``offset = multiplier * donor``.

Spec strings (the CLI's ``--feature``): ``TARGET[@POSITIONS]=OP`` where

- ``TARGET`` is ``layer/feature``, several joined by ``+`` (``2/117+3/5``), or a supernode name;
- ``POSITIONS`` is ``5``, ``5,6``, ``-1`` (the last token) or ``*`` (every position but the
  first; the default);
- ``OP`` is ``x<factor>`` (scale), ``<value>`` (set), ``zero``, or ``dx<multiplier>``
  (inject the donor prompt's activation times the multiplier; needs a donor).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

import torch

from llmbio.features.supernodes import FeatureKey, Supernode, format_feature_id, parse_feature_id

EditKind = Literal["scale", "set", "inject"]
Target = Supernode | str | Sequence[int] | Sequence[str | Sequence[int]]
MAX_EDIT_VALUE = 1e6
"""Largest factor, value or multiplier an edit takes: activations are O(1-100), and a larger
value only overflows the forward pass into NaN."""
_SPEC = re.compile(r"^(?P<target>[^@=]+?)\s*(?:@(?P<pos>[^=]+?))?\s*=\s*(?P<op>\S+)\s*$")


@dataclass(frozen=True)
class Edit:
    """An edit of ``features`` at ``positions`` (``None``: every position except the first,
    whose BOS features the attribution graph leaves out too)."""

    name: str
    features: tuple[FeatureKey, ...]
    kind: EditKind
    value: float  # scale factor, set value, or injection multiplier
    positions: tuple[int, ...] | None = None
    donor: tuple[float, ...] | None = None  # inject: one donor activation per feature

    @classmethod
    def scale_by(cls, target: Target, factor: float, positions=None) -> Edit:
        return cls._make(target, "scale", factor, positions)

    @classmethod
    def set_to(cls, target: Target, value: float, positions=None) -> Edit:
        return cls._make(target, "set", value, positions)

    @classmethod
    def zero(cls, target: Target, positions=None) -> Edit:
        return cls._make(target, "set", 0.0, positions)

    @classmethod
    def inject(
        cls, target: Target, donor: torch.Tensor | Sequence[float], multiplier: float = 1.0,
        positions=None,
    ) -> Edit:  # fmt: skip
        """Set the features to ``multiplier * donor`` (see :func:`donor_activations`)."""
        return cls._make(target, "inject", multiplier, positions).with_donor(donor)

    @classmethod
    def _make(cls, target: Target, kind: EditKind, value: float, positions) -> Edit:
        name, features, own_positions = edit_target(target)
        if positions is None:
            positions = own_positions
        elif isinstance(positions, int):
            positions = (positions,)
        pos = None if positions is None else tuple(int(p) for p in positions)
        value = float(value)
        if not math.isfinite(value) or abs(value) > MAX_EDIT_VALUE:
            raise ValueError(
                f"Edit {name!r}: value {value!r} must be a finite number within "
                f"+-{MAX_EDIT_VALUE:g}"
            )
        return cls(name, features, kind, value, pos)

    def with_donor(self, donor: torch.Tensor | Sequence[float]) -> Edit:
        values = torch.as_tensor(donor, dtype=torch.float64).reshape(-1).tolist()
        if len(values) != len(self.features):
            raise ValueError(
                f"Edit {self.name!r}: {len(values)} donor activations for {len(self.features)} "
                "features; take them with donor_activations() on the same features."
            )
        return replace(self, donor=tuple(values))

    def describe(self) -> str:
        where = "*" if self.positions is None else ",".join(map(str, self.positions))
        op = {"scale": f"x{self.value:g}", "set": f"={self.value:g}"}.get(
            self.kind, f"=donor x{self.value:g}"
        )
        return f"{self.name}@{where}{op}"

    def affine(self) -> tuple[float, list[float]]:
        """``(scale, offsets)``: ``new = scale * a + offsets[i]`` for feature ``i``."""
        if self.kind == "scale":
            return self.value, [0.0] * len(self.features)
        if self.kind == "set":
            return 0.0, [self.value] * len(self.features)
        if self.donor is None:
            raise ValueError(f"Edit {self.name!r} injects a donor activation but has none; "
                             "call with_donor(donor_activations(...)).")  # fmt: skip
        return 0.0, [self.value * d for d in self.donor]


def edit_target(target: Target) -> tuple[str, tuple[FeatureKey, ...], tuple[int, ...] | None]:
    """Name, members and positions of a target (a supernode, ``"2/117+3/5"``, or pairs)."""
    if isinstance(target, Supernode):
        if not target.features:
            raise ValueError(f"Supernode {target.name!r} has no members; resolve its rule first.")
        return target.name, target.features, target.positions
    if isinstance(target, str):
        keys = tuple(parse_feature_id(t) for t in target.split("+"))
    elif len(target) == 2 and all(isinstance(v, int) for v in target):
        keys = (parse_feature_id(target),)
    else:
        keys = tuple(parse_feature_id(t) for t in target)
    if not keys:
        raise ValueError("An edit needs at least one feature.")
    return "+".join(format_feature_id(k) for k in keys), keys, None


def parse_edit(spec: str, supernodes: Mapping[str, Supernode] | None = None) -> Edit:
    """An :class:`Edit` from a spec string (grammar in the module docstring)."""
    match = _SPEC.match(spec)
    if match is None:
        raise ValueError(
            f"Edit {spec!r} is not of the form TARGET[@POSITIONS]=OP, e.g. '2/117@5=x-2', "
            "'2/117=5.0', 'Texas@-1=zero'."
        )
    name, op = match.group("target").strip(), match.group("op")
    target: Target = name
    if supernodes and name in supernodes:
        target = supernodes[name]
    elif "/" not in name:
        known = sorted(supernodes or ())
        raise ValueError(f"Edit target {name!r} is neither 'layer/feature' nor a supernode "
                         f"name (known supernodes: {known}).")  # fmt: skip
    positions = _positions(match.group("pos"), spec)
    try:
        if op == "zero":
            return Edit.zero(target, positions)
        if op.startswith("dx"):
            return Edit._make(target, "inject", float(op[2:]), positions)
        if op.startswith("x"):
            return Edit.scale_by(target, float(op[1:]), positions)
        return Edit.set_to(target, float(op), positions)
    except ValueError as err:
        raise ValueError(f"Edit {spec!r}: bad operation {op!r} ({err}); use x<factor>, "
                         "<value>, zero or dx<multiplier>.") from err  # fmt: skip


def _positions(text: str | None, spec: str) -> tuple[int, ...] | None:
    if text is None or text.strip() in ("*", "all"):
        return None
    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError as err:
        raise ValueError(
            f"Edit {spec!r}: positions {text!r} must be integers separated by commas, or '*'."
        ) from err


class LayerEdits(NamedTuple):
    """The edited entries of one layer, ``E`` of them: ``new = scale * a + offset``."""

    positions: torch.Tensor  # (E,) long
    features: torch.Tensor  # (E,) long
    scale: torch.Tensor  # (E,)
    offset: torch.Tensor  # (E,)


def compile_edits(
    edits: Iterable[Edit], n_layers: int, n_features: int, n_pos: int
) -> dict[int, LayerEdits]:
    """Per-layer edited entries for a prompt of ``n_pos`` tokens; later edits of the same
    (layer, position, feature) override earlier ones. Raises on unknown features/positions."""
    entries: dict[tuple[int, int, int], tuple[float, float]] = {}
    for edit in edits:
        scale, offsets = edit.affine()
        positions = resolve_positions(edit.positions, n_pos, edit.name)
        for (layer, feature), offset in zip(edit.features, offsets, strict=True):
            check_feature(layer, feature, n_layers, n_features)
            for p in positions:
                entries[(layer, p, feature)] = (scale, offset)
    out = {}
    for layer in sorted({k[0] for k in entries}):
        keys = [k for k in entries if k[0] == layer]
        vals = torch.tensor([entries[k] for k in keys], dtype=torch.float64)
        out[layer] = LayerEdits(
            torch.tensor([k[1] for k in keys]), torch.tensor([k[2] for k in keys]),
            vals[:, 0], vals[:, 1],
        )  # fmt: skip
    return out


def resolve_positions(positions: tuple[int, ...] | None, n_pos: int, name: str) -> list[int]:
    """Non-negative positions (``None``: ``1..n_pos-1``); raises on out-of-range ones."""
    if positions is None:
        return list(range(1, n_pos))
    bad = [p for p in positions if not -n_pos <= p < n_pos]
    if bad:
        raise ValueError(
            f"{name!r}: position(s) {bad} out of range for a prompt of {n_pos} tokens; "
            f"use 0..{n_pos - 1} (or -1 for the last token)."
        )
    return sorted({p % n_pos for p in positions})


def check_feature(layer: int, feature: int, n_layers: int, n_features: int) -> None:
    if not 0 <= layer < n_layers:
        raise ValueError(
            f"Feature {layer}/{feature}: layer {layer} does not exist; the transcoder has "
            f"layers 0..{n_layers - 1}."
        )
    if not 0 <= feature < n_features:
        raise ValueError(
            f"Feature {layer}/{feature}: unknown feature id {feature}; the transcoder has "
            f"{n_features} features per layer (0..{n_features - 1})."
        )

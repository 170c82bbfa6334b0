"""Operand plots: classify a feature's activation over every ``a + b`` prompt by the simplest
function of ``(a, b)`` that explains it.

An operand plot is an ``(n, n)`` heatmap ``H[a, b]``: one feature's activation at the ``=`` of
``calc : a + b =`` for ``a, b`` in ``0..n-1`` (Biology §"Addition"). Two kinds of evidence:

**Coarse scores**: the fraction of the heatmap's variance explained by the best fit of a
candidate function (for a grouping, its group means: the correlation ratio eta squared):

==============  ==================================================  ===========
score           function                                            class
==============  ==================================================  ===========
``r2_a``        ``a`` only (stripes across ``b``)                   operand
``r2_b``        ``b`` only                                          operand
``r2_add``      ``f(a) + g(b)`` (two stripes, no interaction)       operand
``r2_sum``      ``a + b`` (diagonal bands)                          sum
``r2_ones``     ``(a mod 10, b mod 10)`` jointly ("_6 + _9")         lookup
``r2_tens``     ``(a // 10, b // 10)`` jointly ("~36 + ~60")         lookup
``r2_smooth``   a smooth 2-D blob (the heatmap blurred)             lookup
==============  ==================================================  ===========

**Fine structure**: the *fast part* of the heatmap (minus its blur) and how it repeats.
``fast_share`` is its share of the variance; ``period_a`` / ``period_b`` the smallest shift
``m <= 10`` along ``a`` / ``b`` at which it correlates with itself (>= ``MIN_PERIOD_CORR``)
far more than at any shorter shift (by ``MIN_PERIOD_GAP``); ``diag_corr`` its correlation with
itself shifted by ``(+1, -1)``, which keeps ``a + b``: high when the fine structure is a
function of the sum. A single sharp band (one sum) has a fast part too, but it does not repeat.

The rule: a heatmap whose fast part holds >= ``MIN_FAST_SHARE`` of the variance and repeats is

- **modular** ``(a+b) mod m`` if the repetition follows the sum (``diag_corr`` high), e.g. the
  paper's "sum ends in 5"; ``a mod m`` / ``b mod m`` if only one axis repeats;
- **lookup** ``(a mod m, b mod m)`` if both axes repeat but not along the sum: the joint
  digits of both operands ("_6 + _9").

Otherwise the coarse scores decide, simplest explanation first: ``unexplained`` if none reaches
``MIN_R2``; ``lookup`` if a joint score beats the operand and sum scores by ``MARGIN``; else
``sum`` or ``operand``, whichever explains more. Groupings with at least half as many groups as
cells (``(a mod 10, b mod 10)`` on a 10 x 10 grid) explain anything and are skipped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import sparse

MIN_R2 = 0.5  # below this no coarse candidate explains the heatmap
MARGIN = 0.15  # a joint lookup must beat the one-variable explanations by this much
SMOOTH_SIGMA = 2.0  # blur (in operand units): slower than this is a blob, faster is "fast"
MAX_PERIOD = 10
MIN_FAST_SHARE = 0.3  # share of the variance in the fast part for fine structure to count
MIN_PERIOD_CORR = 0.5  # autocorrelation of the fast part at the period
MIN_PERIOD_GAP = 0.3  # ... above its autocorrelation at every shorter shift
MIN_DIAG_CORR = 0.5  # fast part repeats along (+1, -1): it follows the sum

SCORES = ("r2_a", "r2_b", "r2_add", "r2_sum", "r2_ones", "r2_tens", "r2_smooth")
FINE = ("fast_share", "diag_corr", "period_a", "period_b")
CLASSES = ("operand", "sum", "modular", "lookup", "unexplained")


def grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Operands of the ``n * n`` prompts in row-major order: ``a`` slow, ``b`` fast."""
    a, b = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return a.ravel(), b.ravel()


def explained(X: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Fraction of each row's variance explained by its group means.

    ``X`` ``(K, N)``, ``groups`` ``(N,)`` non-negative ints -> ``(K,)``; 0 for constant rows.
    """
    return _share(_total(X), _between(np.ascontiguousarray(X.T), groups))


def _between(XT: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Between-group sum of squares of each column of ``XT`` ``(N, K)``: ``(K,)``."""
    _, index, counts = np.unique(groups, return_inverse=True, return_counts=True)
    onehot = sparse.csr_matrix((np.ones(len(index)), (index, np.arange(len(index)))))
    sums = onehot @ XT  # (n_groups, K)
    return (sums**2 / counts[:, None]).sum(0) - XT.sum(0) ** 2 / XT.shape[0]


def _total(X: np.ndarray) -> np.ndarray:
    """Each row's sum of squares about its mean."""
    return np.einsum("kn,kn->k", X, X) - X.sum(1) ** 2 / X.shape[1]


def _share(total: np.ndarray, part: np.ndarray) -> np.ndarray:
    return np.where(total > 1e-9, part / np.maximum(total, 1e-9), 0.0)


def _blur(H: np.ndarray) -> np.ndarray:
    """Gaussian blur of ``(K, n, n)`` heatmaps along both axes (edges renormalised)."""
    d = np.arange(H.shape[1])[:, None] - np.arange(H.shape[1])[None, :]
    # cut at 4 sigma: the far tail underflows to subnormal floats, which are slow to multiply
    w = np.where(np.abs(d) <= 4 * SMOOTH_SIGMA, np.exp(-0.5 * (d / SMOOTH_SIGMA) ** 2), 0.0)
    w = torch.from_numpy(w / w.sum(1, keepdims=True))
    # torch, not numpy: it keeps to the caller's thread count (numpy's BLAS may oversubscribe)
    return (w @ torch.from_numpy(H) @ w.T).numpy()


def scores(H: np.ndarray) -> pd.DataFrame:
    """The coarse scores and the fine structure (module docstring) of heatmaps ``(K, n, n)``."""
    K, n, _ = H.shape
    H = H.astype(np.float64)
    X = H.reshape(K, n * n)
    XT = np.ascontiguousarray(X.T)
    a, b = grid(n)
    total = _total(X)
    out = {
        f"r2_{k}": _share(total, _between(XT, g)) for k, g in (("a", a), ("b", b), ("sum", a + b))
    }
    # on a full grid the row and column effects are orthogonal: their sums of squares add
    grand = H.mean((1, 2))[:, None]
    rows, cols = H.mean(2) - grand, H.mean(1) - grand
    out["r2_add"] = _share(total, n * (rows**2).sum(1) + n * (cols**2).sum(1))
    for name, groups in (("r2_ones", (a % 10) * 10 + b % 10), ("r2_tens", (a // 10) * n + b // 10)):
        informative = 1 < len(np.unique(groups)) <= n * n // 2
        out[name] = _share(total, _between(XT, groups)) if informative else np.full(K, np.nan)
    fast = H - _blur(H)
    energy = np.einsum("kab,kab->k", fast, fast)
    out["r2_smooth"] = _share(total, total - energy)
    out["fast_share"] = _share(total, energy)
    out["diag_corr"] = _share(energy, np.einsum("kab,kab->k", fast[:, 1:, :-1], fast[:, :-1, 1:]))
    out["period_a"] = _periods(fast, energy, axis=1)
    out["period_b"] = _periods(fast, energy, axis=2)
    return pd.DataFrame({name: out[name] for name in SCORES + FINE})


def _periods(fast: np.ndarray, energy: np.ndarray, axis: int) -> np.ndarray:
    """Per heatmap, the period of ``fast`` ``(K, n, n)`` along ``axis`` (0: none)."""
    n = fast.shape[axis]
    out = np.zeros(len(fast), dtype=int)
    if n < 3 * MAX_PERIOD:
        return out
    f = fast if axis == 1 else fast.transpose(0, 2, 1)
    lagged = [np.einsum("kab,kab->k", f[:, :-k], f[:, k:]) for k in range(1, MAX_PERIOD + 1)]
    corr = _share(energy[:, None], np.stack(lagged, axis=1))  # (K, shifts 1..MAX_PERIOD)
    for m in range(MAX_PERIOD, 1, -1):  # smallest period wins: write it last
        shorter = corr[:, : m - 1].max(1)
        ok = (corr[:, m - 1] >= MIN_PERIOD_CORR) & (corr[:, m - 1] >= shorter + MIN_PERIOD_GAP)
        out[ok] = m
    return out


def classify(H: np.ndarray) -> pd.DataFrame:
    """One row per heatmap ``(K, n, n)``: the scores, ``kind`` (one of ``CLASSES``),
    ``function`` (``a``, ``b``, ``a|b``, ``a+b``, ``(a+b) mod m``, ``a mod m``, ``b mod m``,
    ``(a mod m, b mod m)``, ``ones pair``, ``tens pair`` or ``blob``), ``r2`` (the winning
    coarse score) and the peak (``peak_a``, ``peak_b``: its cell; ``peak_sum``: the sum with the
    largest mean activation)."""
    table = scores(H)
    decided = pd.DataFrame([_decide(r._asdict()) for r in table.itertuples(index=False)])
    out = pd.concat([table, decided.reindex(columns=["kind", "function", "r2"])], axis=1)
    K, n, _ = H.shape
    flat = H.reshape(K, -1).argmax(1) if K else np.empty(0, int)
    out["peak_a"], out["peak_b"] = flat // n, flat % n
    out["peak_sum"] = sum_profiles(H).argmax(1) if K else np.empty(0, int)
    return out


def sum_profiles(H: np.ndarray) -> np.ndarray:
    """Mean activation by ``a + b``: ``(K, n, n)`` -> ``(K, 2n - 1)``."""
    K, n, _ = H.shape
    a, b = grid(n)
    onehot = sparse.csr_matrix((np.ones(n * n), (a + b, np.arange(n * n))))
    counts = np.asarray(onehot.sum(1)).ravel()
    return (onehot @ H.reshape(K, -1).T).T / counts


def _decide(r: dict) -> dict:
    r_op = max(r["r2_a"], r["r2_b"], r["r2_add"])
    fine = r["fast_share"] >= MIN_FAST_SHARE and (r["period_a"] or r["period_b"])
    if fine:
        m_a, m_b = int(r["period_a"]), int(r["period_b"])
        if r["diag_corr"] >= MIN_DIAG_CORR:
            return {"kind": "modular", "function": f"(a+b) mod {m_a or m_b}", "r2": r["r2_sum"]}
        if m_a and m_b:
            return {"kind": "lookup", "function": f"(a mod {m_a}, b mod {m_b})", "r2": r_op}
        which, m = ("a", m_a) if m_a else ("b", m_b)
        return {"kind": "modular", "function": f"{which} mod {m}", "r2": r[f"r2_{which}"]}
    joint = {"ones pair": r["r2_ones"], "tens pair": r["r2_tens"], "blob": r["r2_smooth"]}
    joint = {k: v for k, v in joint.items() if not np.isnan(v)}
    look = max(joint, key=joint.get)
    if max(r_op, r["r2_sum"], joint[look]) < MIN_R2:
        return {"kind": "unexplained", "function": "", "r2": max(r_op, r["r2_sum"], joint[look])}
    if joint[look] >= max(r_op, r["r2_sum"]) + MARGIN:
        return {"kind": "lookup", "function": look, "r2": joint[look]}
    if r["r2_sum"] >= r_op:
        return {"kind": "sum", "function": "a+b", "r2": r["r2_sum"]}
    which = max(("a", "b"), key=lambda v: r[f"r2_{v}"])
    single = r[f"r2_{which}"] >= r["r2_add"] - 0.05  # one operand explains it about as well
    return {"kind": "operand", "function": which if single else "a|b", "r2": r_op}


def synthetic_heatmaps(n: int = 100, noise: float = 0.05, seed: int = 0) -> tuple[np.ndarray, list]:
    """Heatmaps of known kind (for tests and the study's classifier check): ``(K, n, n)`` and
    the expected ``kind`` of each."""
    rng = np.random.default_rng(seed)
    a, b = (v.reshape(n, n).astype(float) for v in grid(n))
    s = a + b

    def bump(x, centre, width):
        return np.exp(-0.5 * ((x - centre) / width) ** 2)

    cases = [
        (bump(a, 0.36 * n, 3), "operand"),
        (np.maximum(bump(a, 0.8 * n, 3), bump(b, 0.8 * n, 3)), "operand"),
        (bump(s, 0.95 * n, 4), "sum"),
        (np.maximum(0, s / n - 1), "sum"),
        ((s % 10 == 5).astype(float), "modular"),
        (bump(s, 0.9 * n, 8) * (s % 4 >= 2), "modular"),
        ((a % 10 == 6).astype(float), "modular"),
        (((a % 10 == 6) & (b % 10 == 9)).astype(float), "lookup"),
        (bump(a, 0.36 * n, 8) * bump(b, 0.6 * n, 8) * ((a % 2 == 0) & (b % 2 == 1)), "lookup"),
        (bump(a, 0.36 * n, 4) * bump(b, 0.6 * n, 4), "lookup"),
        (rng.random((n, n)), "unexplained"),
    ]
    H = np.stack([h + noise * rng.standard_normal(h.shape) * h.std() for h, _ in cases])
    return H, [kind for _, kind in cases]

"""The customer-level paired bootstrap of the benchmark (DESIGN section 8).

Point metrics live in `metrics.py`. The bootstrap needs each metric under thousands of
resampling weight vectors, so it has its own weighted versions: every weight-free step
(sorting, tie groups, search positions) is done once per score array, and a draw costs only
gathers and cumulative sums over a (rows, draws) weight matrix. With integer weights they
equal the reference metric on explicitly repeated rows (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from seqchurn.metrics import check_labels, check_scores

BOOT_METRICS = ("auroc", "brier", "ap_returners", "cindex", "ibs")
# Draws per weight matrix: bounds memory at rows x 64 floats; fixed, so draws never depend on it.
_DRAW_CHUNK = 64

Stat = Callable[[np.ndarray], np.ndarray]


# -- weighted metrics: the weight-free work once, then (rows, draws) weight matrices --------------
def _auroc_stat(score: np.ndarray, pos: np.ndarray) -> Stat:
    """AUROC as weighted rank sums: a positive counts the negative weight below it, half on ties."""
    neg_idx = np.flatnonzero(~pos)
    neg_idx = neg_idx[np.argsort(score[neg_idx], kind="stable")]
    neg_sorted = score[neg_idx]
    pos_idx = np.flatnonzero(pos)
    below = np.searchsorted(neg_sorted, score[pos_idx], side="left")
    upto = np.searchsorted(neg_sorted, score[pos_idx], side="right")

    def stat(w: np.ndarray) -> np.ndarray:
        cum = _cumsum0(w[neg_idx])  # (N_neg + 1, D)
        wp = w[pos_idx]
        num = np.einsum("rd,rd->d", wp, cum[below] + cum[upto]) * 0.5
        return _ratio(num, wp.sum(0) * cum[-1])

    return stat


def _ap_stat(score: np.ndarray, pos: np.ndarray) -> Stat:
    """Average precision as scikit-learn defines it: precision at each distinct threshold times
    the recall step.

    Each positive r adds w_r * TP_r / (TP_r + FP_r), TP_r and FP_r being the positive and negative
    weight scoring at least s_r: summed over a tie group that is the group's recall step times its
    precision, and only the positives' rows are touched besides one cumulative sum of the negatives.
    """
    pos_idx = np.flatnonzero(pos)
    pos_idx = pos_idx[np.argsort(-score[pos_idx], kind="stable")]
    neg_idx = np.flatnonzero(~pos)
    neg_idx = neg_idx[np.argsort(-score[neg_idx], kind="stable")]
    desc = -score[pos_idx]
    tp_end = np.searchsorted(desc, desc, side="right")
    fp_end = np.searchsorted(-score[neg_idx], desc, side="right")

    def stat(w: np.ndarray) -> np.ndarray:
        wp = w[pos_idx]
        cum_tp = _cumsum0(wp)
        tp = cum_tp[tp_end]
        seen = tp + _cumsum0(w[neg_idx])[fp_end]
        precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
        return _ratio(np.einsum("rd,rd->d", wp, precision), cum_tp[-1])

    return stat


def _brier_stat(p: np.ndarray, y: np.ndarray) -> Stat:
    err = (p - y) ** 2
    return lambda w: _ratio(err @ w, w.sum(0))


class _Concordance:
    """Harrell's C as lifelines counts it, with pair weights w_i * w_j, for any score on one cutoff.

    A pair (i, j) is admissible when i is an observed churn and j leaves later (tau_j > tau_i, or
    tau_j = tau_i and j is censored); it is concordant when later_j > later_i, half on ties.
    With key = 2 x time rank + censored, admissible reads key_j > key_i. The key range is split
    recursively at the row-count median: in each node the observed rows of the lower part pair
    with every row of the upper part, an AUROC-like count over one sort by (node, score) of one
    side, queried by the other side. Each pair is counted once, in the node that separates its
    keys; splitting by rows makes a large tie group (all churners share tau = 0) a leaf at once,
    so a draw costs about N x depth and never loops over pairs.

    Everything that does not depend on the score (keys, nodes, pair counts, the gathered weights
    of the query side) is built or computed once and shared by the arrays scored on this cutoff.
    """

    def __init__(self, tau: np.ndarray, observed: np.ndarray):
        observed = np.asarray(observed, dtype=bool)
        _, time_rank = np.unique(np.asarray(tau, np.float64), return_inverse=True)
        _, key = np.unique(2 * time_rank + (~observed), return_inverse=True)
        n_keys = int(key.max(initial=-1)) + 1
        died = np.flatnonzero(observed)
        # Pair counts per key group: every key holds only observed or only censored rows.
        self.key_order = np.argsort(key, kind="stable")
        counts = np.bincount(key, minlength=n_keys)
        self.group_starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.group_died = np.bincount(key[died], minlength=n_keys) > 0
        self.levels = []
        for lo, mid, hi in _median_splits(counts):
            node = (
                np.searchsorted(lo, key, side="right") - 1
            )  # node of each row at this depth, -1 if none
            safe = np.maximum(node, 0)
            inside = (node >= 0) & (key < hi[safe])
            upper = inside & (key >= mid[safe])
            left = died[inside[died] & ~upper[died]]
            right = np.flatnonzero(upper)
            if len(left) and len(right):
                # The smaller side is queried (three gathers per row), the larger sorted and summed.
                query_left = len(left) <= len(right)
                self.levels.append((left, right, node, query_left))
        self._cache: tuple = (None, None)

    def _shared(self, w: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Admissible pair weight and each level's query-side weights for `w` (cached)."""
        if self._cache[0] is not w:
            group = np.add.reduceat(w[self.key_order], self.group_starts, axis=0)  # (K, D)
            later = np.cumsum(group[::-1], axis=0)[::-1] - group  # weight of all larger keys
            pairs = (group[self.group_died] * later[self.group_died]).sum(0)
            query = [
                w[left] if query_left else w[right] for left, right, _, query_left in self.levels
            ]
            self._cache = (w, (pairs, query))
        return self._cache[1]

    def stat(self, later: np.ndarray) -> Stat:
        _, srank = np.unique(np.asarray(later, np.float64), return_inverse=True)
        span = int(srank.max(initial=0)) + 2
        plans = []
        for left, right, node, query_left in self.levels:
            query, summed = (left, right) if query_left else (right, left)
            comp = node[summed] * span + srank[summed]
            order = np.argsort(comp, kind="stable")
            comp = comp[order]
            base = node[query] * span
            plans.append(
                (
                    query_left,
                    summed[order],
                    np.searchsorted(comp, base, side="left"),  # node start
                    np.searchsorted(comp, base + srank[query], side="left"),  # first equal score
                    np.searchsorted(comp, base + srank[query], side="right"),  # first larger score
                    np.searchsorted(comp, base + span, side="left"),  # node end
                )
            )

        def stat(w: np.ndarray) -> np.ndarray:
            pairs, query = self._shared(w)
            num = np.zeros(w.shape[1])
            for wq, (query_left, summed, start, eq, gt, end) in zip(query, plans):
                cum = _cumsum0(w[summed])
                if query_left:  # later rows above the observed row's score, half the ties
                    coef = cum[end] - 0.5 * (cum[gt] + cum[eq])
                else:  # observed earlier rows below the later row's score, half the ties
                    coef = 0.5 * (cum[eq] + cum[gt]) - cum[start]
                num += np.einsum("rd,rd->d", wq, coef)
            return _ratio(num, pairs)

        return stat


def _median_splits(counts: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Recursive halving of the key range [0, K) at the row-count median.

    Returns one (lo, mid, hi) triple of arrays per depth.
    """
    cum = np.concatenate([[0], np.cumsum(counts)])
    out, frontier = [], [(0, len(counts))]
    while frontier:
        splits = []
        for lo, hi in frontier:
            if hi - lo >= 2:
                mid = int(np.searchsorted(cum, (cum[lo] + cum[hi]) / 2, side="left"))
                splits.append((lo, min(max(mid, lo + 1), hi - 1), hi))
        if splits:
            out.append(tuple(np.array(col) for col in zip(*splits)))
        frontier = [part for lo, mid, hi in splits for part in ((lo, mid), (mid, hi))]
    return out


def _cumsum0(a: np.ndarray) -> np.ndarray:
    """Cumulative sums along rows with a leading zero row, so a range sum is cum[hi] - cum[lo]."""
    out = np.zeros((a.shape[0] + 1,) + a.shape[1:])
    np.cumsum(a, axis=0, out=out[1:])
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.full(np.shape(num), np.nan), where=np.asarray(den) > 0)


def _stat(metric: str, score: np.ndarray, y: np.ndarray, tau, observed, concordance=None) -> Stat:
    if metric == "auroc":
        return _auroc_stat(score, y == 1)
    if metric == "ap_returners":
        return _ap_stat(1.0 - score, y == 0)
    if metric == "brier":
        return _brier_stat(score, y.astype(np.float64))
    if metric == "cindex":
        return (concordance or _concordance(tau, observed, len(score))).stat(score)
    if metric == "ibs":  # each row's share, censoring weights held at the full sample's
        return lambda w: _ratio(score @ w, w.sum(0))
    raise ValueError(f"metric must be one of {BOOT_METRICS}, got {metric!r}")


def _concordance(tau, observed, n: int) -> _Concordance:
    if tau is None or observed is None:
        raise ValueError("metric 'cindex' needs tau and observed")
    observed = np.asarray(observed, dtype=bool)
    if observed.shape != (n,):
        raise ValueError(f"observed has shape {observed.shape}, expected ({n},)")
    return _Concordance(check_scores("cindex", tau, n=n, what="tau", unit=False), observed)


# -- paired bootstrap --------------------------------------------------------------------------
def paired_bootstrap(
    y_by_cutoff: Sequence[np.ndarray],
    users_by_cutoff: Sequence[np.ndarray],
    a_by_cutoff: Sequence[Sequence[np.ndarray]],
    b_by_cutoff: Sequence[Sequence[np.ndarray]],
    metric: str,
    tau_by_cutoff: Sequence[np.ndarray] | None = None,
    observed_by_cutoff: Sequence[np.ndarray] | None = None,
    n_draws: int = 1000,
    seed: int = 0,
) -> dict:
    """Customer-level paired bootstrap of metric(A) - metric(B), pooled over test cutoffs.

    The same customers appear at several cutoffs and their rows are correlated, so a draw
    picks customer ids with replacement from the union of all cutoffs' customers and gives
    every row of a picked customer, at every cutoff, the customer's multiplicity as its weight.
    A's metric is the mean over its seeds (one array per seed); the pooled statistic is the
    mean over cutoffs of the per-cutoff difference. For "brier" and "ibs" the difference is also
    A - B, so there a negative difference means A is better; for the others positive is better.

    Args:
        y_by_cutoff, users_by_cutoff: per cutoff, (N_c,) labels and customer ids.
        a_by_cutoff: per cutoff, a list of (N_c,) arrays, one per seed of method A.
        b_by_cutoff: per cutoff, a list of (N_c,) arrays of method B (seeds averaged likewise).
        metric: "auroc", "brier", "ap_returners" (arrays are p_churn), "cindex" (arrays are
            `later` scores, higher = later churn, against tau / observed) or "ibs" (arrays are
            each row's share of the integrated Brier score, `survival_metrics.ibs_rows`).
        tau_by_cutoff, observed_by_cutoff: per cutoff, (N_c,) arrays; needed for "cindex".
        n_draws, seed: draws of the bootstrap and the seed of its generator (deterministic).

    Returns:
        dict with mean_diff (on the original data), lo and hi (2.5 / 97.5 percentiles of the
        draws), a and b (pooled metrics on the original data), n_draws, and per_cutoff: a list
        of {mean_diff, lo, hi} per cutoff from the same draws.
    """
    n_cut = len(y_by_cutoff)
    for name, seq in (
        ("users_by_cutoff", users_by_cutoff),
        ("a_by_cutoff", a_by_cutoff),
        ("b_by_cutoff", b_by_cutoff),
    ):
        if len(seq) != n_cut:
            raise ValueError(f"{name} has {len(seq)} cutoffs, y_by_cutoff has {n_cut}")
    if n_cut == 0:
        raise ValueError("paired_bootstrap needs at least one cutoff")
    if metric not in BOOT_METRICS:
        raise ValueError(f"metric must be one of {BOOT_METRICS}, got {metric!r}")
    if n_draws < 1:
        raise ValueError(f"n_draws must be positive, got {n_draws}")
    taus = tau_by_cutoff if tau_by_cutoff is not None else [None] * n_cut
    obs = observed_by_cutoff if observed_by_cutoff is not None else [None] * n_cut

    users = [np.asarray(u, dtype=object) for u in users_by_cutoff]
    all_users = np.unique(np.concatenate(users))
    codes, stats_a, stats_b = [], [], []
    for c in range(n_cut):
        y = check_labels(y_by_cutoff[c])
        if len(users[c]) != len(y):
            raise ValueError(f"cutoff {c}: {len(users[c])} user ids for {len(y)} labels")
        if not len(a_by_cutoff[c]) or not len(b_by_cutoff[c]):
            raise ValueError(f"cutoff {c}: methods A and B each need at least one prediction array")
        codes.append(np.searchsorted(all_users, users[c]))
        shared = _concordance(taus[c], obs[c], len(y)) if metric == "cindex" else None

        def build(arrays, who):
            return [
                _stat(
                    metric,
                    score=check_scores(
                        f"{who} array {k}", x, n=len(y), what=f"cutoff {c}", unit=False
                    ),
                    y=y,
                    tau=taus[c],
                    observed=obs[c],
                    concordance=shared,
                )
                for k, x in enumerate(arrays)
            ]

        stats_a.append(build(a_by_cutoff[c], "A"))
        stats_b.append(build(b_by_cutoff[c], "B"))

    def evaluate(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(users, D) multiplicities -> per-cutoff A, B metrics, each (C, D)."""
        a_val, b_val = [], []
        for c in range(n_cut):
            w = counts[codes[c]]
            a_val.append(np.mean([s(w) for s in stats_a[c]], axis=0))
            b_val.append(np.mean([s(w) for s in stats_b[c]], axis=0))
        return np.array(a_val), np.array(b_val)

    a0, b0 = evaluate(np.ones((len(all_users), 1)))
    rng = np.random.default_rng(seed)
    n_users = len(all_users)
    diffs = []
    for start in range(0, n_draws, _DRAW_CHUNK):
        d = min(_DRAW_CHUNK, n_draws - start)
        picks = rng.integers(0, n_users, size=(d, n_users))
        counts = np.bincount(
            (picks + n_users * np.arange(d)[:, None]).ravel(), minlength=d * n_users
        )
        a_val, b_val = evaluate(
            np.ascontiguousarray(counts.reshape(d, n_users).T, dtype=np.float64)
        )
        diffs.append(a_val - b_val)
    per_cut = np.concatenate(diffs, axis=1)  # (C, n_draws)
    pooled = per_cut.mean(axis=0)

    def interval(x: np.ndarray) -> tuple[float, float]:
        lo, hi = np.nanpercentile(x, [2.5, 97.5]) if np.isfinite(x).any() else (math.nan, math.nan)
        return float(lo), float(hi)

    lo, hi = interval(pooled)
    per_cutoff = []
    for c in range(n_cut):
        clo, chi = interval(per_cut[c])
        per_cutoff.append({"mean_diff": float(a0[c, 0] - b0[c, 0]), "lo": clo, "hi": chi})
    return {
        "mean_diff": float((a0 - b0).mean()),
        "lo": lo,
        "hi": hi,
        "a": float(a0.mean()),
        "b": float(b0.mean()),
        "n_draws": int(n_draws),
        "per_cutoff": per_cutoff,
    }

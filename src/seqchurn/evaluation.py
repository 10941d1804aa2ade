"""Test-set scoring, the customer-level paired bootstrap, plots and the README results (DESIGN section 8).

Point metrics come from scikit-learn, lifelines and `metrics.py`, the reference
implementations. The bootstrap needs each metric under thousands of resampling
weight vectors, so it has its own weighted versions: every weight-free step (sorting,
tie groups, search positions) is done once per score array, and a draw costs only
gathers and cumulative sums over a (rows, draws) weight matrix. With integer weights
they equal the reference metric on explicitly repeated rows (tested).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from seqchurn import metrics as M
from seqchurn.io import atomic_write

BOOT_METRICS = ("auroc", "brier", "ap_returners", "cindex")
SCORE_COLUMNS = (
    "method",
    "auroc",
    "ap_churners",
    "ap_returners",
    "brier",
    "log_loss",
    "ece",
    "lift10",
    "cindex",
)
ECE_BINS = 15
_DRAW_CHUNK = 64  # draws per weight matrix: bounds memory at rows x 64 floats; fixed, so draws never depend on it

Stat = Callable[[np.ndarray], np.ndarray]


# -- point metrics ------------------------------------------------------------------------------
def calibration_error(p: np.ndarray, y: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error with equal-width bins, as torchmetrics' BinaryCalibrationError (l1).

    Bins are [k/n, (k+1)/n) and p = 1 has a bin of its own, exactly as torch.bucketize(right=True) puts it.
    """
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    idx = np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1), p, side="right") - 1
    gap = np.bincount(idx, weights=y - p, minlength=n_bins + 1)
    return float(np.abs(gap).sum() / max(len(p), 1))


def _check_scores(name: str, values, n: int, what: str, unit: bool) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (n,):
        raise ValueError(
            f"{what} of {name!r} has shape {values.shape}, expected ({n},): one value per test row"
        )
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"{what} of {name!r} has {int(bad.sum())} NaN/inf value(s), first at row {int(np.flatnonzero(bad)[0])}: "
            "every test row needs a score (rows are never dropped silently)"
        )
    if unit and ((values < 0) | (values > 1)).any():
        raise ValueError(f"{what} of {name!r} has values outside [0, 1]: pass probabilities")
    return values


def _check_labels(y) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise ValueError("y must be a 1-d array of 0/1 labels (1 = churned)")
    return y.astype(np.int64)


def score_table(
    y: np.ndarray,
    preds: Mapping[str, np.ndarray],
    tau: np.ndarray,
    observed: np.ndarray,
    later: Mapping[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Every report metric of each method on one test snapshot.

    Args:
        y: (N,) 0/1 churn labels.
        preds: method -> (N,) p_churn; a NaN raises ValueError rather than dropping the row,
            since a method that skips customers would be scored on an easier set.
        tau, observed: (N,) days to churn and its event flag (False = censored), DESIGN section 3.
        later: method -> (N,) score where higher means later churn, for the C-index; a method
            missing here is ranked by -p_churn, as DESIGN section 8 prescribes.

    Returns:
        One row per method: method, auroc, ap_churners, ap_returners (returners as the positive
        class, scored by 1 - p), brier, log_loss, ece (15 equal-width bins), lift10, cindex.
    """
    y = _check_labels(y)
    n = len(y)
    tau = _check_scores("tau", tau, n, "tau", unit=False)
    observed = np.asarray(observed, dtype=bool)
    if observed.shape != (n,):
        raise ValueError(f"observed has shape {observed.shape}, expected ({n},)")
    later = dict(later or {})
    two_classes = len(np.unique(y)) == 2
    rows = []
    for name, p in preds.items():
        p = _check_scores(name, p, n, "p_churn", unit=True)
        s = _check_scores(name, later[name], n, "later score", unit=False) if name in later else -p
        rows.append(
            {
                "method": name,
                "auroc": roc_auc_score(y, p) if two_classes else math.nan,
                "ap_churners": average_precision_score(y, p) if two_classes else math.nan,
                "ap_returners": average_precision_score(1 - y, 1 - p) if two_classes else math.nan,
                "brier": float(np.mean((p - y) ** 2)),
                "log_loss": M.log_loss(p, y),
                "ece": calibration_error(p, y),
                "lift10": M.lift_at(p, y, 0.1),
                "cindex": _cindex_or_nan(s, tau, observed),
            }
        )
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def _cindex_or_nan(later: np.ndarray, tau: np.ndarray, observed: np.ndarray) -> float:
    try:
        return M.cindex(later, tau, observed)
    except (
        ZeroDivisionError
    ):  # lifelines' answer when no pair is admissible, e.g. everything censored
        return math.nan


# -- weighted metrics: the weight-free work once, then (rows, draws) weight matrices --------------
def _auroc_stat(score: np.ndarray, pos: np.ndarray) -> Stat:
    """AUROC as weighted rank sums: each positive counts the negative weight below it, half of it on ties."""
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
    """Average precision as scikit-learn defines it (precision at each distinct threshold times the recall step).

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
                # The smaller side is queried (three gathers per row), the larger one sorted and summed.
                query_left = len(left) <= len(right)
                self.levels.append((left, right, node, query_left))
        self._cache: tuple = (None, None)

    def _shared(self, w: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Admissible pair weight and each level's query-side weights for this weight matrix (cached)."""
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
    """Recursive halving of the key range [0, K) at the row-count median, one (lo, mid, hi) array triple per depth."""
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
    raise ValueError(f"metric must be one of {BOOT_METRICS}, got {metric!r}")


def _concordance(tau, observed, n: int) -> _Concordance:
    if tau is None or observed is None:
        raise ValueError("metric 'cindex' needs tau and observed")
    observed = np.asarray(observed, dtype=bool)
    if observed.shape != (n,):
        raise ValueError(f"observed has shape {observed.shape}, expected ({n},)")
    return _Concordance(_check_scores("cindex", tau, n, "tau", unit=False), observed)


def weighted_metric(metric: str, score, y, weights, tau=None, observed=None):
    """One bootstrap metric under row weights.

    Args:
        metric: "auroc", "brier", "ap_returners" (score = p_churn) or "cindex" (score = later).
        score, y: (N,) arrays; tau, observed: (N,) for "cindex".
        weights: (N,) or (N, D) non-negative; integer weights equal repeating rows.

    Returns:
        A float for (N,) weights, else a (D,) array (NaN where the metric is undefined).
    """
    y = _check_labels(y)
    stat = _stat(
        metric, _check_scores(metric, score, len(y), "score", unit=False), y, tau, observed
    )
    w = np.asarray(weights, dtype=np.float64)
    out = stat(w[:, None] if w.ndim == 1 else w)
    return float(out[0]) if w.ndim == 1 else out


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
    mean over cutoffs of the per-cutoff difference. For "brier" the difference is also A - B,
    so there a negative difference means A is better; for the others positive is better.

    Args:
        y_by_cutoff, users_by_cutoff: per cutoff, (N_c,) labels and customer ids.
        a_by_cutoff: per cutoff, a list of (N_c,) arrays, one per seed of method A.
        b_by_cutoff: per cutoff, a list of (N_c,) arrays of method B (seeds averaged likewise).
        metric: "auroc", "brier", "ap_returners" (arrays are p_churn) or "cindex" (arrays are
            `later` scores, higher = later churn, against tau / observed).
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
        y = _check_labels(y_by_cutoff[c])
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
                    _check_scores(f"{who} array {k}", x, len(y), f"cutoff {c}", unit=False),
                    y,
                    taus[c],
                    obs[c],
                    shared,
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


# -- plots -------------------------------------------------------------------------------------
def _figure(ncols: int = 1):
    # Figure without pyplot: the Agg canvas, and no global backend switch for the importing program.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5 * ncols, 5), layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _save(fig, path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def reliability_plot(y: np.ndarray, preds: Mapping[str, np.ndarray], path) -> None:
    """Observed churn rate against mean p_churn in deciles of each method's p (equal-count bins)."""
    y = _check_labels(y)
    fig, (ax,) = _figure()
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect calibration")
    for name, p in preds.items():
        p = _check_scores(name, p, len(y), "p_churn", unit=True)
        bins = np.array_split(np.argsort(p, kind="stable"), min(10, len(p)))
        ax.plot(
            [p[b].mean() for b in bins],
            [y[b].mean() for b in bins],
            marker="o",
            ms=4,
            lw=1.2,
            label=name,
        )
    ax.set(
        xlabel="mean predicted p_churn (decile)",
        ylabel="observed churn rate",
        xlim=(0, 1),
        ylim=(0, 1),
        title="Reliability",
    )
    ax.legend(fontsize=7, loc="upper left")
    _save(fig, path)


def roc_pr_plots(y: np.ndarray, preds: Mapping[str, np.ndarray], prefix: str) -> None:
    """`{prefix}_roc.png` (ROC) and `{prefix}_pr.png` (precision-recall for churners and for returners)."""
    y = _check_labels(y)
    checked = {
        name: _check_scores(name, p, len(y), "p_churn", unit=True) for name, p in preds.items()
    }
    fig, (ax,) = _figure()
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    for name, p in checked.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, lw=1.2, label=f"{name} ({roc_auc_score(y, p):.3f})")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (AUROC)")
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, f"{prefix}_roc.png")

    fig, axes = _figure(2)
    for ax, (label, target, flip) in zip(
        axes, (("churners", y, False), ("returners", 1 - y, True))
    ):
        ax.axhline(target.mean(), color="grey", lw=1, ls="--")
        for name, p in checked.items():
            score = 1 - p if flip else p
            precision, recall, _ = precision_recall_curve(target, score)
            ax.plot(
                recall,
                precision,
                lw=1.2,
                label=f"{name} ({average_precision_score(target, score):.3f})",
            )
        ax.set(
            xlabel="recall",
            ylabel="precision",
            ylim=(0, 1.02),
            title=f"Precision-recall, {label} (AP)",
        )
        ax.legend(fontsize=7, loc="lower left")
    _save(fig, f"{prefix}_pr.png")


# -- README --------------------------------------------------------------------------------------
_TABLE_METRICS = (
    ("auroc", "AUROC"),
    ("ap_churners", "AP churn"),
    ("ap_returners", "AP return"),
    ("brier", "Brier"),
    ("log_loss", "log loss"),
    ("ece", "ECE"),
    ("lift10", "lift@10%"),
    ("cindex", "C-index"),
    ("oracle_ratio", "oracle ratio"),
)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _num(x, digits: int = 4, sign: bool = False) -> str:
    if x is None or pd.isna(x):
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _mean_std(values: pd.Series, digits: int = 4) -> str:
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return "–"
    if len(v) == 1:
        return _num(float(v.iloc[0]), digits)
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def _interval(mean, lo, hi) -> str:
    text = f"{_num(mean, sign=True)} [{_num(lo, sign=True)}, {_num(hi, sign=True)}]"
    excludes_zero = not any(pd.isna(v) for v in (lo, hi)) and (lo > 0 or hi < 0)
    return f"**{text}**" if excludes_zero else text


def _results_tables(results: pd.DataFrame, meta: dict) -> list[str]:
    info = {d.get("dataset"): d for d in meta.get("datasets", []) if isinstance(d, dict)}
    out = []
    for dataset in results["dataset"].drop_duplicates():
        part = results[results["dataset"] == dataset]
        metrics = [(c, h) for c, h in _TABLE_METRICS if c in part.columns and part[c].notna().any()]
        rows = []
        for method in part["method"].drop_duplicates():
            runs = part[part["method"] == method]
            time_s = _mean_std(runs["seconds"], 1) if "seconds" in runs else "–"
            split = [_mean_std(runs[c], 1) if c in runs else "–" for c in ("fit_s", "test_s")]
            if split != ["–", "–"]:
                time_s += f" ({split[0]} / {split[1]})"
            rows.append(
                [method, str(len(runs))] + [_mean_std(runs[c]) for c, _ in metrics] + [time_s]
            )
        d = info.get(dataset, {})
        facts = [
            f"{d['n_test']:,} test customers" if "n_test" in d else None,
            f"churn rate {d['churn_rate']:.3f}" if "churn_rate" in d else None,
            f"test cutoff {d['test_cutoff']}" if "test_cutoff" in d else None,
        ]
        facts = ", ".join(f for f in facts if f)
        out.append(f"#### {dataset}" + (f" ({facts})" if facts else ""))
        out.append(
            _table(["method", "runs"] + [h for _, h in metrics] + ["seconds (fit / test)"], rows)
        )
    return out


def _bootstrap_tables(boot: pd.DataFrame, results: pd.DataFrame) -> list[str]:
    out = []
    for group in boot["group"].drop_duplicates():
        part = boot[boot["group"] == group]
        metrics = list(part["metric"].drop_duplicates())
        keyed = {(r.method, r.reference, r.metric): r for r in part.itertuples()}
        pairs = list(dict.fromkeys(zip(part["method"], part["reference"])))
        rows = [
            [m, ref]
            + [
                _interval(
                    keyed[(m, ref, k)].mean_diff, keyed[(m, ref, k)].lo, keyed[(m, ref, k)].hi
                )
                if (m, ref, k) in keyed
                else "–"
                for k in metrics
            ]
            for m, ref in pairs
        ]
        out.append(f"#### {group}: method − reference, pooled over its test cutoffs")
        out.append(_table(["method", "reference"] + metrics, rows))
        names = (
            list(results.loc[results["group"] == group, "dataset"].drop_duplicates())
            if "group" in results
            else []
        )
        n_cut = (
            max((len(v) for v in part["per_cutoff"] if isinstance(v, (list, tuple))), default=0)
            if "per_cutoff" in part
            else 0
        )
        if n_cut > 1:
            names = names if len(names) == n_cut else [f"cutoff {i + 1}" for i in range(n_cut)]
            rows = []
            for m, ref in pairs:
                for i, name in enumerate(names):
                    cells = []
                    for k in metrics:
                        pc = keyed[(m, ref, k)].per_cutoff if (m, ref, k) in keyed else None
                        ok = isinstance(pc, (list, tuple)) and len(pc) > i
                        cells.append(
                            _interval(pc[i]["mean_diff"], pc[i]["lo"], pc[i]["hi"]) if ok else "–"
                        )
                    rows.append([m, ref, name] + cells)
            out.append(f"#### {group}: per test cutoff")
            out.append(_table(["method", "reference", "test set"] + metrics, rows))
    return out


def results_markdown(
    results: pd.DataFrame,
    boot: pd.DataFrame,
    ablation: pd.DataFrame,
    gaps: pd.DataFrame,
    meta: dict,
) -> str:
    """The README results section: per-dataset metrics, bootstrap intervals, ablations, fairness gaps.

    Args:
        results: one row per (dataset, method, seed): score_table columns plus dataset, group,
            seed, seconds, fit_s, test_s and optionally oracle_ratio.
        boot: one row per (group, method, reference, metric) with mean_diff, lo, hi, per_cutoff.
        ablation: score_table columns plus `ablation` and `seconds` (may be empty).
        gaps: `fairness.largest_gaps` output (may be empty).
        meta: seeds, draws, minutes, cpus, quick, and `datasets` (dataset, n_test, churn_rate, test_cutoff).
    """
    seeds = ", ".join(str(s) for s in meta.get("seeds", []))
    head = (
        f"Seeds {seeds or '–'}; {meta.get('draws', '–')} bootstrap draws; "
        f"{_num(meta.get('minutes'), 1)} min on {meta.get('cpus', '–')} CPUs"
    )
    parts = [head + (" (quick run: small data, not the protocol)." if meta.get("quick") else ".")]
    parts.append(
        "Mean ± standard deviation over seeds (runs = seeds). AUROC, AP, lift, C-index and oracle ratio: "
        "higher is better; Brier, log loss and ECE (15 bins): lower is better."
    )
    if results is not None and not results.empty:
        parts += _results_tables(results, meta)
    if boot is not None and not boot.empty:
        parts.append(
            "### Paired customer-level bootstrap\n\nDifference of means and 95% interval; bold where it "
            "excludes 0. For Brier, negative means the method beats the reference."
        )
        parts += _bootstrap_tables(boot, results if results is not None else pd.DataFrame())
    if ablation is not None and not ablation.empty:
        parts.append("### Ablations (LSTM, one seed, cdnow@1997-12-31)")
        ref = ablation.loc[ablation["ablation"] == "default", "auroc"]
        cols = [c for c in ("auroc", "ap_returners", "brier", "ece", "cindex") if c in ablation]
        rows = [
            [r["ablation"]]
            + [_num(r[c]) for c in cols]
            + ([_num(r["auroc"] - ref.iloc[0], sign=True)] if len(ref) else [])
            + [_num(r.get("seconds"), 1)]
            for _, r in ablation.iterrows()
        ]
        parts.append(
            _table(
                ["ablation"] + cols + (["Δ AUROC vs default"] if len(ref) else []) + ["seconds"],
                rows,
            )
        )
    if gaps is not None and not gaps.empty:
        parts.append("### Fairness: largest gap between groups")
        rows = [
            [
                r["group_column"],
                r["metric"],
                _num(r["gap"]),
                f"{r['low_group']} ({_num(r['low_value'])})",
                f"{r['high_group']} ({_num(r['high_value'])})",
            ]
            for _, r in gaps.iterrows()
        ]
        parts.append(_table(["grouping", "metric", "gap", "lowest", "highest"], rows))
    return "\n\n".join(parts) + "\n"


def replace_between_markers(path, begin: str, end: str, text: str) -> None:
    """Replace the lines between the marker lines `begin` and `end` of a file with `text`, atomically.

    The markers stay; each must be alone on exactly one line, begin before end.
    """
    path = Path(path)
    lines = path.read_text().splitlines(keepends=True)
    found = {m: [i for i, line in enumerate(lines) if line.strip() == m] for m in (begin, end)}
    for marker, where in found.items():
        if len(where) != 1:
            raise ValueError(
                f"{path}: marker line {marker!r} found {len(where)} times, expected once"
            )
    i, j = found[begin][0], found[end][0]
    if j < i:
        raise ValueError(f"{path}: end marker {end!r} comes before begin marker {begin!r}")
    body = text if text.endswith("\n") or not text else text + "\n"
    new = "".join(lines[: i + 1]) + body + "".join(lines[j:])
    atomic_write(path, lambda tmp: Path(tmp).write_text(new))

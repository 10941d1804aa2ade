"""RFM segments and K-means clusters of customers (DESIGN section 7).

Two views of the same three numbers per user (recency, frequency, monetary):

- **RFM scores**: quintile scores 1..5 (5 = best: most recent, most frequent, highest
  spend) mapped to the classic named segments by R and the mean of F and M.
- **K-means** on standardized log-RFM, with k chosen by the silhouette on a seeded sample
  of at most 20,000 users, then fitted on all users.

Both are order-invariant: rows are put in user order before anything random happens, so
the same population gives the same segments however it was chunked or shuffled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans

from seqchurn.data.features import EventIndex, summary_features
from seqchurn.data.labels import activity_mask
from seqchurn.errors import DataError

# Columns of the prediction frame that `assign_segments` needs (inference passes exactly these).
SEGMENT_INPUTS = ("user_id", "recency_days", "frequency_days", "monetary_mean")

SEGMENT_NAMES = (
    "Champions",
    "Loyal",
    "Potential loyalist",
    "New",
    "Promising",
    "Need attention",
    "About to sleep",
    "At risk",
    "Can't lose them",
    "Hibernating",
    "Lost",
)

# The usual R x FM grid (rows R = 5..1, columns FM = 1..5): recent high spenders are
# Champions, once-valuable customers gone quiet are "Can't lose them", and so on.
_GRID = {
    5: ("New", "Potential loyalist", "Potential loyalist", "Champions", "Champions"),
    4: ("Promising", "Potential loyalist", "Potential loyalist", "Loyal", "Loyal"),
    3: ("About to sleep", "About to sleep", "Need attention", "Loyal", "Loyal"),
    2: ("Hibernating", "Hibernating", "At risk", "At risk", "Can't lose them"),
    1: ("Lost", "Hibernating", "At risk", "At risk", "Can't lose them"),
}
_SEGMENT_LOOKUP = np.array(
    [[_GRID[r][fm - 1] for fm in range(1, 6)] for r in range(1, 6)], dtype=object
)  # (R, FM)


def quintile_score(values: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Scores 1..5 by quintile of rank; tied values share the lower score (order-invariant).

    With "min" ranks a value's score depends only on how many users are strictly worse, so
    the many one-order customers of a shop all get F = 1 rather than being split arbitrarily.
    """
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return np.zeros(0, dtype=np.int64)
    key = values if higher_is_better else -values
    below = pd.Series(key).rank(method="min").to_numpy() - 1.0  # users strictly worse
    return (1 + np.floor(5.0 * below / len(values))).astype(np.int64).clip(1, 5)


def rfm_scores(recency_days, frequency, monetary) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quintile scores (R, F, M), each (N,) int in 1..5; R = 5 for the most recent users."""
    return (
        quintile_score(recency_days, higher_is_better=False),
        quintile_score(frequency),
        quintile_score(monetary),
    )


def rfm_segment(r: np.ndarray, f: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Named segment of each user from R and FM = round-half-up of (F + M) / 2; (N,) object."""
    fm = np.floor((np.asarray(f) + np.asarray(m)) / 2.0 + 0.5).astype(np.int64).clip(1, 5)
    return _SEGMENT_LOOKUP[np.asarray(r, dtype=np.int64).clip(1, 5) - 1, fm - 1]


def log_rfm(recency_days, frequency, monetary) -> np.ndarray:
    """Standardized log1p(R, F, M), (N, 3); a constant column stays at 0."""
    x = np.log1p(
        np.maximum(np.stack([recency_days, frequency, monetary], axis=1).astype(np.float64), 0.0)
    )
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)


def silhouette_scores(
    x: np.ndarray, labelings: Sequence[np.ndarray], chunk: int = 512
) -> list[float]:
    """Mean silhouette of each labeling of the same points, in one pass over pairwise distances.

    Equals sklearn's `silhouette_score` (singletons score 0), but the (chunk, N) distance
    block is computed once and reduced for every k at once with one matrix product.
    """
    n = len(x)
    ks = [int(lab.max()) + 1 for lab in labelings]
    offsets = np.concatenate([[0], np.cumsum(ks)])
    onehot = np.zeros((n, offsets[-1]))  # (N, sum k)
    for j, lab in enumerate(labelings):
        onehot[np.arange(n), offsets[j] + lab] = 1.0
    sizes = onehot.sum(axis=0)
    sq = (x * x).sum(axis=1)
    sil = np.zeros((n, len(labelings)))
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        d2 = sq[lo:hi, None] + sq[None, :] - 2.0 * x[lo:hi] @ x.T  # (c, N)
        dist = np.sqrt(np.maximum(d2, 0.0))
        dist[np.arange(hi - lo), np.arange(lo, hi)] = 0.0
        sums = dist @ onehot  # (c, sum k): distance to each cluster of each labeling
        for j, lab in enumerate(labelings):
            s = sums[:, offsets[j] : offsets[j + 1]]
            own = lab[lo:hi]
            own_size = sizes[offsets[j] + own]
            a = s[np.arange(hi - lo), own] / np.maximum(own_size - 1, 1)
            mean_other = s / np.maximum(sizes[offsets[j] : offsets[j + 1]], 1)
            mean_other[np.arange(hi - lo), own] = np.inf
            b = mean_other.min(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                v = (b - a) / np.maximum(a, b)
            sil[lo:hi, j] = np.where(own_size > 1, np.nan_to_num(v), 0.0)
    return [float(v) for v in sil.mean(axis=0)]


def kmeans_clusters(
    x: np.ndarray,
    k_min: int = 2,
    k_max: int = 8,
    silhouette_sample: int = 20_000,
    seed: int = 0,
    n_init: int = 4,
) -> tuple[np.ndarray, dict]:
    """K-means labels of the rows of `x` (N, D), k chosen by silhouette on a seeded sample.

    Clusters are renumbered by their centroid's first coordinate (for log-RFM: cluster 0 is
    the most recent), so ids do not depend on K-means' arbitrary order.

    Returns:
        labels (N,) int64, and info: {"k", "silhouette": {k: score}, "sample": n}.
    """
    if not 2 <= k_min <= k_max:
        raise DataError(f"segments need 2 <= k_min <= k_max, got k_min={k_min}, k_max={k_max}")
    if silhouette_sample < 3:
        raise DataError(f"segments.silhouette_sample must be at least 3, got {silhouette_sample}")
    n = len(x)
    rng = np.random.default_rng(seed)
    idx = (
        np.sort(rng.choice(n, size=silhouette_sample, replace=False))
        if n > silhouette_sample
        else np.arange(n)
    )
    sample = x[idx]
    distinct = len(np.unique(sample, axis=0)) if len(sample) else 0
    ks = [k for k in range(k_min, k_max + 1) if k <= min(distinct, len(sample) - 1)]
    info: dict = {"k": 1, "silhouette": {}, "sample": len(sample)}
    if not ks:  # too few distinct users to cluster: one cluster
        return np.zeros(n, dtype=np.int64), info
    fits = [KMeans(k, n_init=n_init, random_state=seed).fit(sample) for k in ks]
    scores = silhouette_scores(sample, [f.labels_.astype(np.int64) for f in fits])
    info["silhouette"] = {k: s for k, s in zip(ks, scores)}
    best = ks[int(np.argmax(scores))]
    info["k"] = best
    model = KMeans(best, n_init=n_init, random_state=seed).fit(x)
    order = np.argsort(model.cluster_centers_[:, 0], kind="stable")
    rename = np.empty(best, dtype=np.int64)
    rename[order] = np.arange(best)
    return rename[model.labels_], info


def assign_segments(
    frame: pd.DataFrame,
    k_min: int = 2,
    k_max: int = 8,
    silhouette_sample: int = 20_000,
    seed: int = 0,
) -> pd.DataFrame:
    """`segment` (named RFM segment) and `cluster` (K-means id) of every row of `frame`.

    Args:
        frame: one row per user with the `SEGMENT_INPUTS` columns: `recency_days` (days since
            the last activity day), `frequency_days` (activity days) and `monetary_mean`
            (spend per activity day); M is scored on the total, mean x frequency.

    Returns:
        Frame with `segment`, `cluster` in the row order of `frame` (index 0..N-1).
    """
    missing = [c for c in SEGMENT_INPUTS[1:] if c not in frame.columns]
    if missing:
        raise DataError(f"segments need column(s) {missing}; the frame has {list(frame.columns)}")
    n = len(frame)
    if "user_id" in frame.columns:
        order = np.argsort(frame["user_id"].astype(str).to_numpy(), kind="stable")
    else:
        order = np.arange(n)
    sorted_frame = frame.iloc[order]
    rec = sorted_frame["recency_days"].to_numpy(np.float64)
    freq = sorted_frame["frequency_days"].to_numpy(np.float64)
    money = sorted_frame["monetary_mean"].to_numpy(np.float64) * freq
    if not (np.isfinite(rec).all() and np.isfinite(freq).all() and np.isfinite(money).all()):
        raise DataError(
            "segments need finite recency, frequency and monetary values for every user"
        )
    r, f, m = rfm_scores(rec, freq, money)
    segment = np.empty(n, dtype=object)
    cluster = np.empty(n, dtype=np.int64)
    segment[order] = rfm_segment(r, f, m)
    if n:
        labels, _ = kmeans_clusters(
            log_rfm(rec, freq, money), k_min, k_max, silhouette_sample, seed
        )
        cluster[order] = labels
    return pd.DataFrame({"segment": segment, "cluster": cluster})


def rfm_from_events(
    events: pd.DataFrame, cutoff_day: int, activity_event_types: Sequence[str] | None = None
) -> pd.DataFrame:
    """Per-user `recency_days`, `frequency_days`, `monetary_mean` at day C from cleaned events.

    The summary features of the models (data/features.py): frequency counts activity days
    and the mean is spend per activity day. One row per user active on or before C, sorted.
    """
    active = activity_mask(events, activity_event_types)
    users = np.unique(events.loc[active & (events["day"].to_numpy() <= cutoff_day), "user_id"])
    if not len(users):
        raise DataError("no activity on or before the cutoff: nothing to segment")
    index = EventIndex(events, active)
    cutoffs = np.full(len(users), cutoff_day, dtype=np.int64)
    features = summary_features(index, index.user_codes(users), cutoffs, count_types=())
    return pd.DataFrame(
        {"user_id": users, **{c: features[c].to_numpy() for c in SEGMENT_INPUTS[1:]}}
    )


def segment_table(
    frame: pd.DataFrame, by: str = "segment", churn: str = "p_churn", value: str = "value_at_risk"
) -> pd.DataFrame:
    """Users, share, churn rate and value per segment (or cluster).

    Args:
        frame: one row per user with the `by`, `churn` and `value` columns; `churn` may be a
            label y (observed churn rate) or p_churn (expected churn rate).

    Returns:
        One row per group, largest first: `users`, `share`, `churn_rate`, `value_mean`,
        `value_total`.
    """
    missing = [c for c in (by, churn, value) if c not in frame.columns]
    if missing:
        raise DataError(
            f"segment table needs column(s) {missing}; the frame has {list(frame.columns)}"
        )
    g = frame.groupby(by, sort=True).agg(
        users=(churn, "size"),
        churn_rate=(churn, "mean"),
        value_mean=(value, "mean"),
        value_total=(value, "sum"),
    )
    g.insert(1, "share", g["users"] / max(len(frame), 1))
    return g.sort_values("users", ascending=False, kind="stable").reset_index()

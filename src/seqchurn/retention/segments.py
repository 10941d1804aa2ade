"""RFM segments and K-means clusters of customers (DESIGN section 7).

Two views of the same three numbers per user (recency, frequency, monetary):

- **RFM scores**: quintile scores 1..5 (5 = best: most recent, most frequent, highest
  spend) mapped to the classic named segments by R and the mean of F and M.
- **K-means** on standardized log-RFM, with k chosen by the silhouette on a seeded sample
  of the training users.

Both are fitted once, at train time, on the training snapshots (`fit_segments`, called by the
Preprocessor) and stored in the checkpoint as quintile edges, scaler and centroids. Scoring a
user then needs that user alone (`SegmentModel.assign`), so chunking, sharding, streaming or
scoring one user gives the same segment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans

from seqchurn.data.features import EventIndex, summary_features
from seqchurn.data.labels import activity_mask
from seqchurn.errors import DataError

# The raw summary columns a segment is computed from (plus the user id, for a stable fit order).
SEGMENT_INPUTS = ("user_id", "recency_days", "frequency_days", "monetary_mean")


@dataclass(frozen=True)
class SegmentSettings:
    """How segments are fitted: `data.segments` of conf/data/common.yaml, plus the run's seed.

    k is chosen among k_min..k_max by the silhouette on `silhouette_sample` rows; K-means runs
    on at most `fit_sample` rows with `n_init` starts.
    """

    k_min: int = 2
    k_max: int = 8
    silhouette_sample: int = 20_000
    fit_sample: int = 200_000
    n_init: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.k_min <= self.k_max:
            raise DataError(
                f"segments need 2 <= k_min <= k_max, got k_min={self.k_min}, k_max={self.k_max}"
            )
        if self.silhouette_sample < 3:
            raise DataError(
                f"segments.silhouette_sample must be at least 3, got {self.silhouette_sample}"
            )
        if self.fit_sample < 1:
            raise DataError(f"segments.fit_sample must be positive, got {self.fit_sample}")

    @classmethod
    def from_config(cls, values: Mapping | None, seed: int) -> "SegmentSettings":
        """The settings of a config node; an unknown key is a DataError naming the known ones."""
        known = {f.name for f in fields(cls)} - {"seed"}
        unknown = sorted(set(values or {}) - known)
        if unknown:
            raise DataError(f"unknown data.segments setting(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values or {}), seed=seed)


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


def rfm_segment(r: np.ndarray, f: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Named segment of each user from R and FM = round-half-up of (F + M) / 2; (N,) object."""
    fm = np.floor((np.asarray(f) + np.asarray(m)) / 2.0 + 0.5).astype(np.int64).clip(1, 5)
    return _SEGMENT_LOOKUP[np.asarray(r, dtype=np.int64).clip(1, 5) - 1, fm - 1]


def _log_rfm(recency_days, frequency, monetary) -> np.ndarray:
    """log1p(R, F, M), (N, 3), negatives clipped to 0."""
    return np.log1p(
        np.maximum(np.stack([recency_days, frequency, monetary], axis=1).astype(np.float64), 0.0)
    )


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
    x: np.ndarray, settings: SegmentSettings = SegmentSettings()
) -> tuple[np.ndarray, np.ndarray, dict]:
    """K-means of the rows of `x` (N, D), k chosen by silhouette on a seeded sample.

    Clusters are renumbered by their centroid's first coordinate (for log-RFM: cluster 0 is
    the most recent), so ids do not depend on K-means' arbitrary order.

    Returns:
        labels (N,) int64, centroids (k, D), and info: {"k", "silhouette": {k: score}, "sample": n}.
    """
    k_min, k_max, seed, n_init = settings.k_min, settings.k_max, settings.seed, settings.n_init
    sample = x[_sample_rows(len(x), settings.silhouette_sample, seed)]
    distinct = len(np.unique(sample, axis=0)) if len(sample) else 0
    ks = [k for k in range(k_min, k_max + 1) if k <= min(distinct, len(sample) - 1)]
    info: dict = {"k": 1, "silhouette": {}, "sample": len(sample)}
    if not ks:  # too few distinct users to cluster: one cluster
        centroid = x.mean(axis=0, keepdims=True) if len(x) else np.zeros((1, x.shape[1]))
        return np.zeros(len(x), dtype=np.int64), centroid, info
    fits = [KMeans(k, n_init=n_init, random_state=seed).fit(sample) for k in ks]
    scores = silhouette_scores(sample, [f.labels_.astype(np.int64) for f in fits])
    info["silhouette"] = {k: s for k, s in zip(ks, scores)}
    best = ks[int(np.argmax(scores))]
    info["k"] = best
    model = KMeans(best, n_init=n_init, random_state=seed).fit(x)
    order = np.argsort(model.cluster_centers_[:, 0], kind="stable")
    rename = np.empty(best, dtype=np.int64)
    rename[order] = np.arange(best)
    return rename[model.labels_], model.cluster_centers_[order], info


def _sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted seeded sample of `size` of range(n), or all of it."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def _rfm_arrays(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(recency, frequency, monetary total) of the `SEGMENT_INPUTS` columns of `frame`."""
    missing = [c for c in SEGMENT_INPUTS[1:] if c not in frame.columns]
    if missing:
        raise DataError(f"segments need column(s) {missing}; the frame has {list(frame.columns)}")
    rec = frame["recency_days"].to_numpy(np.float64)
    freq = frame["frequency_days"].to_numpy(np.float64)
    money = frame["monetary_mean"].to_numpy(np.float64) * freq
    if not (np.isfinite(rec).all() and np.isfinite(freq).all() and np.isfinite(money).all()):
        raise DataError(
            "segments need finite recency, frequency and monetary values for every user"
        )
    return rec, freq, money


def _quintile_edges(key: np.ndarray) -> list[float]:
    """Edges e_1..e_4 with 1 + #(e_s < v) = `quintile_score` of v within `key` itself.

    A value's score is 1 + floor(5 * #strictly-worse / N); it reaches s + 1 once at least
    ceil(s N / 5) values are strictly below it, i.e. once it exceeds the sorted value there.
    """
    ranked = np.sort(key)
    at = np.ceil(np.arange(1, 5) * len(ranked) / 5.0).astype(np.int64) - 1
    return ranked[np.clip(at, 0, len(ranked) - 1)].tolist()


@dataclass
class SegmentModel:
    """RFM quintile edges and log-RFM K-means fitted on training users; saved in checkpoints."""

    # edges on the "higher is better" key of each of R (as -recency), F and M
    edges: list[list[float]]
    mean: list[float]  # log1p(R, F, M) scaler
    std: list[float]
    centroids: list[list[float]]  # (k, 3), cluster 0 = most recent
    info: dict = field(default_factory=dict)

    def assign(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`segment` and `cluster` of each row of `frame` (the `SEGMENT_INPUTS` columns), alone."""
        rec, freq, money = _rfm_arrays(frame)
        keys = (-rec, freq, money)
        r, f, m = (
            1 + (np.asarray(key)[:, None] > np.asarray(e)[None, :]).sum(axis=1)
            for key, e in zip(keys, self.edges)
        )
        x = (_log_rfm(rec, freq, money) - np.asarray(self.mean)) / np.asarray(self.std)
        c = np.asarray(self.centroids)
        d2 = ((x[:, None, :] - c[None, :, :]) ** 2).sum(axis=-1)  # (N, k)
        return pd.DataFrame(
            {"segment": rfm_segment(r, f, m), "cluster": d2.argmin(axis=1).astype(np.int64)}
        )

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> "SegmentModel":
        return cls(**state)


def fit_segments(
    frame: pd.DataFrame, settings: SegmentSettings = SegmentSettings()
) -> SegmentModel:
    """Fit the quintile edges and K-means on `frame` (training users' `SEGMENT_INPUTS` columns).

    K-means (and the silhouette choice of k among k_min..k_max) runs on a seeded sample of at
    most `fit_sample` rows (`silhouette_sample` for the silhouette): the centroids of a
    few hundred thousand users are as good as those of millions, at a fraction of the time.
    """
    if not len(frame):
        raise DataError("segments need at least one training user")
    if "user_id" in frame.columns:  # the same users in any row order give the same fit
        frame = frame.iloc[np.argsort(frame["user_id"].astype(str).to_numpy(), kind="stable")]
    rec, freq, money = _rfm_arrays(frame)
    logs = _log_rfm(rec, freq, money)
    mean, std = logs.mean(axis=0), logs.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    rows = _sample_rows(len(frame), settings.fit_sample, settings.seed)
    _, centroids, info = kmeans_clusters((logs[rows] - mean) / std, settings)
    info["silhouette"] = {int(k): float(v) for k, v in info["silhouette"].items()}
    return SegmentModel(
        edges=[_quintile_edges(key) for key in (-rec, freq, money)],
        mean=mean.tolist(),
        std=std.tolist(),
        centroids=centroids.tolist(),
        info={**info, "fit_rows": len(rows)},
    )


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

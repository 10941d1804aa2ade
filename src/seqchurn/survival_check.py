"""Is the time-to-churn output right where tau is observed? Predicted survival vs Kaplan-Meier.

A snapshot at cutoff C confirms tau only up to its censoring edge m (DESIGN section 3), so the
check runs one cutoff at a time, at the bin edges that cutoff observes, within risk deciles
(by p_churn): the mean predicted P(tau > e) of a decile should fall inside the Kaplan-Meier
confidence band of that decile's realised tau. Kaplan-Meier (lifelines) handles the censoring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from lifelines import KaplanMeierFitter

from seqchurn.data.labels import censor_edge, to_date
from seqchurn.metrics import cindex
from seqchurn.plots import figure, save


def km_by_risk_group(
    surv_pred: np.ndarray,
    edges: Sequence[int],
    tau: np.ndarray,
    observed: np.ndarray,
    risk: np.ndarray,
    max_edge: int,
    n_groups: int = 10,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """One row per (risk group, edge <= max_edge): mean predicted P(tau > e) vs Kaplan-Meier and its band.

    Args:
        surv_pred: (N, K) predicted P(tau > edges[k]).
        edges: (K,) finite bin edges in days.
        tau, observed: (N,) days to churn (or the censoring edge) and whether tau was seen.
        risk: (N,) score whose quantiles form the groups (p_churn: decile 1 = lowest risk).
        max_edge: the largest edge every row can confirm (the cutoff's censoring edge m).
    """
    edges = np.asarray(edges)
    keep = np.flatnonzero(edges <= max_edge)
    n_groups = max(1, min(n_groups, len(risk) // 20))  # a Kaplan-Meier band needs a few rows
    ranks = pd.Series(risk).rank(method="first").to_numpy()
    group = np.minimum((ranks - 1) * n_groups // len(risk), n_groups - 1).astype(int)
    rows = []
    for g in range(n_groups):  # one Kaplan-Meier fit per decile, not per user
        sel = group == g
        kmf = KaplanMeierFitter(alpha=alpha).fit(tau[sel], event_observed=observed[sel])
        times = edges[keep].astype(float)
        km = kmf.survival_function_at_times(times).to_numpy()
        band = kmf.confidence_interval_survival_function_
        # the band is a step function of the timeline: take its value at the last step <= e
        at = np.searchsorted(band.index.to_numpy(), times, side="right") - 1
        lo = np.where(at >= 0, band.iloc[np.clip(at, 0, None), 0].to_numpy(), 1.0)
        hi = np.where(at >= 0, band.iloc[np.clip(at, 0, None), 1].to_numpy(), 1.0)
        pred = surv_pred[sel][:, keep].mean(axis=0)
        for j, e in enumerate(edges[keep]):
            rows.append(
                {
                    "decile": g + 1,
                    "edge_days": int(e),
                    "n": int(sel.sum()),
                    "s_pred": float(pred[j]),
                    "s_km": float(km[j]),
                    "km_lo": float(lo[j]),
                    "km_hi": float(hi[j]),
                }
            )
    out = pd.DataFrame(rows)
    out["inside"] = (out["s_pred"] >= out["km_lo"] - 1e-9) & (out["s_pred"] <= out["km_hi"] + 1e-9)
    return out


def survival_check(
    surv_pred: np.ndarray,
    tau_mean: np.ndarray,
    p_churn: np.ndarray,
    snapshots: pd.DataFrame,
    edges: Sequence[int],
    obs_end: int,
    horizon: int,
    n_groups: int = 10,
) -> tuple[pd.DataFrame, dict]:
    """Predicted vs Kaplan-Meier survival per risk decile, one cutoff at a time, and the C-index of tau_mean.

    Args:
        surv_pred: (N, K) predicted P(tau > edges[k]) for the rows of `snapshots`.
        tau_mean: (N,) predicted restricted mean time to churn.
        p_churn: (N,) predicted churn probability (defines the deciles).
        snapshots: `cutoff`, `tau`, `observed` of the same rows.
        obs_end: the last day the labels of these snapshots may use.

    Returns:
        (table, summary): the per (cutoff, decile, edge) table and `share_inside`,
        `cindex_tau_mean` (pooled) and `cindex_tau_mean_by_cutoff`.
    """
    cut = snapshots["cutoff"].to_numpy()
    tau = snapshots["tau"].to_numpy(dtype=np.float64)
    observed = snapshots["observed"].to_numpy(dtype=bool)
    parts, by_cutoff = [], {}
    for c in np.unique(cut):
        sel = cut == c
        m = int(censor_edge(np.array([c]), obs_end, horizon, edges)[0])
        part = km_by_risk_group(
            surv_pred[sel], edges, tau[sel], observed[sel], p_churn[sel], m, n_groups
        )
        parts.append(part.assign(cutoff=to_date(int(c))))
        by_cutoff[to_date(int(c))] = cindex(tau_mean[sel], tau[sel], observed[sel])
    table = pd.concat(parts, ignore_index=True)
    summary = {
        "share_inside": float(table["inside"].mean()),
        "cindex_tau_mean": float(np.mean(list(by_cutoff.values()))),
        "cindex_tau_mean_by_cutoff": by_cutoff,
    }
    return table, summary


def plot_survival_check(table: pd.DataFrame, path: str | Path) -> Path:
    """Predicted vs Kaplan-Meier P(tau > e), a point per (cutoff, decile, edge), with the KM band."""
    fig, (ax,) = figure()
    for e, part in table.groupby("edge_days"):
        err = np.vstack([part["s_km"] - part["km_lo"], part["km_hi"] - part["s_km"]]).clip(min=0)
        ax.errorbar(
            part["s_pred"],
            part["s_km"],
            yerr=err,
            fmt="o",
            ms=3,
            alpha=0.6,
            label=f"P(tau > {e} d)",
        )
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(
        xlabel="predicted, mean of decile",
        ylabel="Kaplan-Meier (95% band)",
        title=f"time to churn by risk decile: {table['inside'].mean():.0%} inside the band",
    )
    ax.legend(fontsize=8)
    return save(fig, path)

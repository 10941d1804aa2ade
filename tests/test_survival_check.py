"""The time-to-churn check: true survival lands inside the Kaplan-Meier bands, a wrong one does not."""

from __future__ import annotations

import numpy as np
import pandas as pd

from seqchurn.survival_check import plot_survival_check, survival_check

EDGES = [0, 30, 60, 90, 180]
HORIZON = 90


def _snapshots(rng, hazard, cutoff, obs_end):
    """Constant per-bin hazards: bin k is reached with (1-h)^k; tau sits on the bin's upper edge."""
    n = len(hazard)
    bins = rng.geometric(hazard) - 1  # 0 = churned in the first bin
    tau = np.asarray(EDGES + [EDGES[-1] + 1])[np.minimum(bins, len(EDGES))].astype(float)
    m = max(e for e in EDGES if e <= obs_end - HORIZON - cutoff)
    observed = tau <= m
    return pd.DataFrame(
        {
            "cutoff": cutoff,
            "tau": np.where(observed, tau, m),
            "observed": observed,
            "y": (bins == 0).astype(int),
        }
    ), np.full(n, m)


def _case(h_pred_scale):
    rng = np.random.default_rng(0)
    parts, surv, p = [], [], []
    for cutoff, n in (
        (1000, 3000),
        (1070, 3000),
    ):  # the later cutoff confirms tau only up to 30 days
        h = rng.uniform(0.05, 0.6, n)
        snaps, _ = _snapshots(rng, h, cutoff, obs_end=1190)
        hp = np.clip(h * h_pred_scale, 0, 1)
        surv.append((1 - hp)[:, None] ** np.arange(1, len(EDGES) + 1)[None, :])
        p.append(hp)
        parts.append(snaps)
    snaps = pd.concat(parts, ignore_index=True)
    surv, p = np.vstack(surv), np.concatenate(p)
    tau_mean = ((surv[:, 1:] + surv[:, :-1]) / 2 * np.diff(EDGES)).sum(axis=1)
    return survival_check(surv, tau_mean, p, snaps, EDGES, obs_end=1190, horizon=HORIZON)


def test_true_survival_is_inside_the_band_and_a_wrong_one_is_not(tmp_path):
    table, summary = _case(1.0)
    assert summary["share_inside"] >= 0.85
    assert summary["cindex_tau_mean"] > 0.6
    late = table[table["cutoff"] == table["cutoff"].max()]
    assert (
        late["edge_days"].max() == 30 and table["edge_days"].max() == 90
    )  # only edges a cutoff can confirm
    assert set(table["decile"]) == set(range(1, 11))
    plot_survival_check(table, tmp_path / "check.png")
    assert (tmp_path / "check.png").stat().st_size > 0 and len(list(tmp_path.iterdir())) == 1

    _, wrong = _case(0.6)  # hazards too low: survival overestimated everywhere
    assert wrong["share_inside"] < 0.3

"""Campaign evaluation: treated vs control after the plan date (DESIGN section 7).

For each user of a plan, the outcome window is (C, C+H] with C the plan's cutoff:
`churn` = no activity event in it (the label y of data/labels.py), `value` = spend on
activity events in it. Treated and
control are compared within each risk tier (the control group was drawn per tier), and
the overall effect weights the tiers by their treated users, so it is the average effect
on the treated even when the control share differs a little between tiers.

Intervals are percentile bootstraps that resample users with replacement inside each
(tier, group) stratum, seeded and vectorized over draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from seqchurn.data.labels import activity_mask, make_snapshots, to_date
from seqchurn.errors import DataError

GROUPS = ("treated", "control")
OVERALL = "overall"


@dataclass
class CampaignReport:
    """`table`: one row per tier and an `overall` row; `outcomes`: one row per plan user."""

    table: pd.DataFrame
    outcomes: pd.DataFrame


def campaign_outcomes(
    plan: pd.DataFrame,
    events: pd.DataFrame,
    horizon_days: int,
    obs_end: int | None = None,
    activity_event_types: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per plan user: tier, group, action cost, churn (0/1) and value in (C, C+H].

    Args:
        plan: the plan file: `user_id`, `cutoff`, `group` (treated/control), and when present
            `risk_tier` and `expected_cost` (the cost of the action a treated user got).
        events: cleaned events (data/events.py), covering at least C + H.
        horizon_days: H.
        obs_end: last day the events cover (days since 1970-01-01); None = their last day.
        activity_event_types: types that count as activity (None = all).
    """
    missing = [c for c in ("user_id", "cutoff", "group") if c not in plan.columns]
    if missing:
        raise DataError(f"the plan lacks column(s) {missing}; it has {list(plan.columns)}")
    if not len(plan):
        raise DataError("the plan has no rows")
    if horizon_days <= 0:
        raise DataError(f"horizon_days must be positive, got {horizon_days}")
    bad = ~plan["group"].isin(GROUPS)
    if bad.any():
        found = sorted(plan.loc[bad, "group"].astype(str).unique())[:3]
        raise DataError(f"group must be treated or control; found {found}")
    if plan["user_id"].duplicated().any():
        raise DataError("the plan lists a user twice")
    try:
        cutoff = pd.to_datetime(plan["cutoff"]).to_numpy().astype("datetime64[D]").astype(np.int64)
    except (ValueError, TypeError) as err:
        raise DataError(f"cannot read the plan's cutoff column as dates: {err}") from err
    last = int(events["day"].max()) if obs_end is None else int(obs_end)
    if (cutoff + horizon_days > last).any():
        raise DataError(
            f"the events end on {to_date(last)}, before the plan date "
            f"{to_date(int(cutoff.max()))} + {horizon_days} days: "
            "the outcome window is not over yet"
        )
    uid = plan["user_id"].astype(str).to_numpy()
    theirs = events[events["user_id"].astype(str).isin(set(uid)).to_numpy()]
    act = events.loc[activity_mask(events, activity_event_types), ["user_id", "day", "amount"]]
    act = act[act["user_id"].astype(str).isin(set(uid))]
    if not len(act):
        raise DataError(
            "none of the plan's users appears in the events: is it the same shop's log?"
        )
    churn = _churn_labels(
        theirs,
        uid,
        cutoff,
        horizon_days=horizon_days,
        obs_end=last,
        activity_event_types=activity_event_types,
    )
    start = pd.Series(cutoff, index=uid).reindex(act["user_id"].astype(str)).to_numpy()
    in_window = (act["day"].to_numpy() > start) & (act["day"].to_numpy() <= start + horizon_days)
    win = act.loc[in_window]
    spend = win.groupby(win["user_id"].astype(str))["amount"].sum()
    treated = (plan["group"] == "treated").to_numpy()
    cost = (
        plan["expected_cost"].to_numpy(np.float64)
        if "expected_cost" in plan.columns
        else np.zeros(len(plan))
    )
    return pd.DataFrame(
        {
            "user_id": uid,
            "risk_tier": plan["risk_tier"].astype(str).to_numpy()
            if "risk_tier" in plan.columns
            else "all",
            "group": plan["group"].to_numpy(),
            "cost": np.where(treated, np.nan_to_num(cost), 0.0),
            "churn": churn,
            "value": spend.reindex(uid).fillna(0.0).to_numpy(np.float64),
        }
    )


def _churn_labels(
    events: pd.DataFrame,
    uid: np.ndarray,
    cutoff: np.ndarray,
    horizon_days: int,
    obs_end: int,
    activity_event_types: Sequence[str] | None,
) -> np.ndarray:
    """(N,) int8: the churn label y (data/labels.py) of each user at their plan date."""
    snapshots = make_snapshots(
        events,
        cutoffs=np.unique(cutoff),
        horizon=horizon_days,
        obs_end=obs_end,
        activity_event_types=activity_event_types,
    )
    y = snapshots.set_index(["user_id", "cutoff"])["y"]
    y = y.reindex(pd.MultiIndex.from_arrays([uid, cutoff])).to_numpy()
    unknown = pd.isna(y)
    if unknown.any():
        # the plan only holds users eligible at its date, so the log is not the one it came from
        raise DataError(
            f"{int(unknown.sum())} of the plan's users (e.g. {list(uid[unknown][:3])}) have no "
            "activity on or before the plan date in these events: evaluate on the log the "
            "predictions were made from, with the same data.activity_event_types"
        )
    return y.astype(np.int8)


def bootstrap_means(
    x: np.ndarray, n_boot: int, rng: np.random.Generator, max_cells: int = 4_000_000
) -> np.ndarray:
    """Means of `n_boot` resamples (with replacement) of the rows of x (N, M): (n_boot, M).

    Draws are made in blocks of at most `max_cells` indices, so memory stays bounded.
    """
    n = len(x)
    out = np.empty((n_boot, x.shape[1]))
    step = max(1, max_cells // max(n, 1))
    for lo in range(0, n_boot, step):
        b = min(step, n_boot - lo)
        idx = rng.integers(0, n, size=(b, n))
        out[lo : lo + b] = x[idx].mean(axis=1)  # (b, M)
    return out


def evaluate_campaign(
    plan: pd.DataFrame,
    events: pd.DataFrame,
    horizon_days: int,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    obs_end: int | None = None,
    activity_event_types: Sequence[str] | None = None,
) -> CampaignReport:
    """Churn rate and value per user, treated vs control, per tier and overall, with intervals.

    Returns:
        CampaignReport whose `table` has, per tier and `overall`: `n_treated`, `n_control`,
        `churn_treated`, `churn_control`, `churn_diff` (treated - control, in rate points,
        negative = fewer churners) with `churn_diff_lo`/`_hi`, `value_treated`,
        `value_control`, `value_diff` with `_lo`/`_hi`, `saved_customers` (-churn_diff x
        n_treated), `cost` (actions of the treated), `net_value` (value_diff x n_treated -
        cost) with `_lo`/`_hi`.
    """
    if not 0 < level < 1 or n_boot < 10:
        raise DataError(f"need 0 < level < 1 and n_boot >= 10, got {level} and {n_boot}")
    out = campaign_outcomes(
        plan, events, horizon_days, obs_end=obs_end, activity_event_types=activity_event_types
    )
    rng = np.random.default_rng(seed)
    q = [50 * (1 - level), 50 * (1 + level)]
    rows, boots = [], []
    for tier, part in out.groupby("risk_tier", sort=True):
        t = part[part["group"] == "treated"]
        c = part[part["group"] == "control"]
        row = {
            "risk_tier": tier,
            "n_treated": len(t),
            "n_control": len(c),
            "cost": float(t["cost"].sum()),
        }
        if len(t) and len(c):
            mt, mc = (
                t[["churn", "value"]].mean().to_numpy(),
                c[["churn", "value"]].mean().to_numpy(),
            )
            bt = bootstrap_means(t[["churn", "value"]].to_numpy(np.float64), n_boot, rng)
            bc = bootstrap_means(c[["churn", "value"]].to_numpy(np.float64), n_boot, rng)
            boots.append((len(t), row["cost"], bt - bc))
            row.update(_effects(mt, mc, bt - bc, len(t), row["cost"], q))
        else:
            unknown = np.full(2, np.nan)
            row.update(_effects(unknown, unknown, None, len(t), row["cost"], q))
            if len(t):
                row["churn_treated"], row["value_treated"] = t["churn"].mean(), t["value"].mean()
            if len(c):
                row["churn_control"], row["value_control"] = c["churn"].mean(), c["value"].mean()
        rows.append(row)
    if not boots:
        raise DataError("no tier has both treated and control users: nothing to compare")
    rows.append(_overall(out, rows, boots, q))
    return CampaignReport(pd.DataFrame(rows), out)


def _effects(
    mt: np.ndarray, mc: np.ndarray, diff_boot: np.ndarray | None, n_t: int, cost: float, q
) -> dict:
    """Point estimates and percentile intervals of one stratum's differences."""
    diff = mt - mc
    if diff_boot is None:
        lo = hi = np.full(2, np.nan)
        net_lo = net_hi = np.nan
    else:
        lo, hi = np.percentile(diff_boot, q, axis=0)
        net_lo, net_hi = np.percentile(diff_boot[:, 1] * n_t - cost, q)
    return {
        "churn_treated": mt[0],
        "churn_control": mc[0],
        "churn_diff": diff[0],
        "churn_diff_lo": lo[0],
        "churn_diff_hi": hi[0],
        "value_treated": mt[1],
        "value_control": mc[1],
        "value_diff": diff[1],
        "value_diff_lo": lo[1],
        "value_diff_hi": hi[1],
        "saved_customers": -diff[0] * n_t,
        "net_value": diff[1] * n_t - cost,
        "net_value_lo": net_lo,
        "net_value_hi": net_hi,
    }


def _overall(out: pd.DataFrame, rows: list[dict], boots: list, q) -> dict:
    """Tiers weighted by their treated users; a tier without both groups adds only its costs."""
    n_t = np.array([b[0] for b in boots], dtype=np.float64)
    treated, control = out[out["group"] == "treated"], out[out["group"] == "control"]
    cost = float(treated["cost"].sum())
    w = n_t / n_t.sum()
    compared = [r for r in rows if r["n_treated"] and r["n_control"]]
    diff = np.array([[r["churn_diff"], r["value_diff"]] for r in compared])  # (tiers, 2)
    diff_boot = np.stack([b[2] for b in boots])  # (tiers, n_boot, 2)
    pooled = (w[:, None] * diff).sum(axis=0)
    pooled_boot = np.einsum("t,tbm->bm", w, diff_boot)
    net_boot = np.einsum("t,tb->b", n_t, diff_boot[:, :, 1]) - cost
    lo, hi = np.percentile(pooled_boot, q, axis=0)
    return {
        "risk_tier": OVERALL,
        "n_treated": len(treated),
        "n_control": len(control),
        "cost": cost,
        "churn_treated": treated["churn"].mean(),
        "churn_control": control["churn"].mean(),
        "churn_diff": pooled[0],
        "churn_diff_lo": lo[0],
        "churn_diff_hi": hi[0],
        "value_treated": treated["value"].mean(),
        "value_control": control["value"].mean(),
        "value_diff": pooled[1],
        "value_diff_lo": lo[1],
        "value_diff_hi": hi[1],
        "saved_customers": -pooled[0] * n_t.sum(),
        "net_value": float((n_t * diff[:, 1]).sum() - cost),
        "net_value_lo": float(np.percentile(net_boot, q[0])),
        "net_value_hi": float(np.percentile(net_boot, q[1])),
    }

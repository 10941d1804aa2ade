"""Predictions -> a retention plan: actions by rule, ranked by expected profit, cut at the budget,
with a control group (DESIGN section 7).

`make_plan` runs named steps, each a plain function on frames or arrays:

1. `check_settings`, `check_predictions`, and the registry's `check_actions`, `check_rules`.
2. `plan_tiers`: the fitted `risk_tier` of the predictions, else cut by `retention.tiers`.
3. `score_users`: the first matching rule picks each user's action (`rules.apply_rules`), and
   `expected_profit` = p_churn x acceptance x (value - cost) - cost x (1 - p_churn) x waste,
   with value = `value_12m`, what the customer is worth over the next 12 months if kept.
4. `rank_candidates`: the users with an action, by expected profit.
5. `cut_at_budget` (`select_users`): the prefix that fits the budget and whose marginal
   profit is still positive.
6. `control_group`: a seeded random share of the selected users of each tier gets nothing.
7. `assemble_plan`: the plan columns, including each action's own (`actions.action_columns`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from seqchurn.errors import DataError
from seqchurn.retention.actions import (
    NO_ACTION,
    Targets,
    action_columns,
    check_actions,
    per_user,
)
from seqchurn.retention.rules import apply_rules, check_rules
from seqchurn.retention.tiers import CUT_SETTINGS, cut_tiers

PREDICTION_COLUMNS = ("user_id", "cutoff", "p_churn", "value_12m", "value_at_risk")


@dataclass
class Plan:
    """The plan (one row per selected user), the ranked candidates behind it, and a summary."""

    plan: pd.DataFrame
    curve: pd.DataFrame
    summary: dict = field(default_factory=dict)


def expected_profit(
    p: np.ndarray, acceptance: np.ndarray, value: np.ndarray, cost: np.ndarray, waste: float
) -> np.ndarray:
    """p x acceptance x (value - cost) - cost x (1 - p) x waste, per user."""
    return p * acceptance * (value - cost) - cost * (1.0 - p) * waste


def select_users(profit: np.ndarray, cost: np.ndarray, budget: float | None) -> int:
    """How many of the users, already in rank order, to take: positive profit and within budget."""
    positive = profit > 0
    n = int(np.argmin(positive)) if not positive.all() else len(profit)  # first non-positive
    if budget is not None:
        spent = np.cumsum(cost)
        n = min(n, int(np.searchsorted(spent, float(budget) * (1 + 1e-12), side="right")))
    return n


def control_group(user_id: np.ndarray, tier: np.ndarray, share: float, seed: int) -> np.ndarray:
    """True for the users put in the control group: round(share x n) random users of each tier.

    Draws are made in user order, so the group depends only on the users, tiers and seed.
    """
    if not 0 <= share < 1:
        raise DataError(f"retention.control_share must be in [0, 1), got {share}")
    n = len(user_id)
    order = np.argsort(np.asarray(user_id).astype(str), kind="stable")
    key = np.empty(n)
    key[order] = np.random.default_rng(seed).random(n)
    frame = pd.DataFrame({"tier": np.asarray(tier).astype(str), "key": key})
    pos = frame.groupby("tier")["key"].rank(method="first").to_numpy() - 1  # 0-based, in tier
    size = frame.groupby("tier")["key"].transform("size").to_numpy()
    return pos < np.floor(share * size + 0.5)


def intervene_by(
    cutoff: pd.Series,
    tau_median_days: np.ndarray | None,
    default_days: int,
    p_churn: np.ndarray | None = None,
) -> np.ndarray:
    """cutoff + floor(tau_median_days), the expected churn date; the cutoff itself when the user
    is already likely silent (p_churn >= 0.5); cutoff + `default_days` when the median is unknown.
    """
    if tau_median_days is None:
        tau = np.full(len(cutoff), np.nan)
    else:
        tau = np.asarray(tau_median_days, dtype=np.float64)
    if p_churn is not None:  # a model without time bins still knows who is likely gone already
        tau = np.where(np.asarray(p_churn) >= 0.5, 0.0, tau)
    days = np.where(np.isnan(tau), float(default_days), np.floor(np.maximum(tau, 0.0)))
    start = pd.to_datetime(cutoff).to_numpy()
    return (start + pd.to_timedelta(days, unit="D").to_numpy()).astype("datetime64[ns]")


def check_settings(budget: float | None, waste: float, control_share: float) -> None:
    """Refuse a negative budget or waste and a control share outside [0, 1)."""
    if budget is not None and not (
        isinstance(budget, (int, float)) and not isinstance(budget, bool) and 0 <= budget < np.inf
    ):
        raise DataError(f"retention.budget must be a finite number >= 0, or null, got {budget!r}")
    if waste < 0:
        raise DataError(f"retention.waste must be >= 0, got {waste}")
    if not 0 <= control_share < 1:
        raise DataError(f"retention.control_share must be in [0, 1), got {control_share}")


def _non_negative(predictions: pd.DataFrame, column: str) -> np.ndarray:
    values = pd.to_numeric(predictions[column], errors="coerce").to_numpy(np.float64)
    if not np.isfinite(values).all() or (values < 0).any():
        raise DataError(f"{column} must be a number >= 0 for every user")
    return values


def check_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    """Typed `cutoff`, `p_churn`, `value_12m`, `value_at_risk` of the predictions; index 0..N-1."""
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        raise DataError(
            f"predictions lack column(s) {missing}; they have {list(predictions.columns)} "
            "(scripts/predict.py writes them all)"
        )
    if not len(predictions):
        raise DataError("the predictions have no rows")
    if predictions["user_id"].isna().any() or predictions["user_id"].duplicated().any():
        raise DataError("predictions need one row per user: user_id is null or duplicated")
    p = pd.to_numeric(predictions["p_churn"], errors="coerce").to_numpy(np.float64)
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise DataError("p_churn must be a probability in [0, 1] for every user")
    try:
        cutoff = pd.to_datetime(predictions["cutoff"])
    except (ValueError, TypeError) as err:
        raise DataError(f"cannot read the cutoff column as dates: {err}") from err
    if cutoff.isna().any():
        raise DataError("the cutoff column has empty dates")
    return predictions.assign(
        cutoff=cutoff.astype("datetime64[ns]"),
        p_churn=p,
        value_12m=_non_negative(predictions, "value_12m"),
        value_at_risk=_non_negative(predictions, "value_at_risk"),
    ).reset_index(drop=True)


def plan_tiers(pred: pd.DataFrame, tiers: Mapping | None) -> np.ndarray:
    """(N,) tier names: the file's fitted `risk_tier`, else this population cut by `tiers`."""
    if "risk_tier" in pred.columns and pred["risk_tier"].notna().all():
        return pred["risk_tier"].astype(str).to_numpy(dtype=object)
    settings = {k: v for k, v in dict(tiers or {}).items() if k in CUT_SETTINGS}
    return cut_tiers(pred["p_churn"].to_numpy(), **settings)


def score_users(
    pred: pd.DataFrame,
    actions: Mapping,
    rules: Sequence[Mapping],
    tiers: Mapping | None,
    waste: float,
) -> pd.DataFrame:
    """`pred` plus each user's `risk_tier`, `segment`, `planned_action`, `expected_cost`,
    `acceptance` and `expected_profit`."""
    tier = plan_tiers(pred, tiers)
    if "segment" in pred.columns:
        segment = pred["segment"].astype(str).to_numpy(dtype=object)
    else:
        segment = np.full(len(pred), "unknown", dtype=object)
    p, value = pred["p_churn"].to_numpy(), pred["value_12m"].to_numpy()
    planned = apply_rules(tier, segment, value, rules)
    cost, acceptance = per_user(planned, actions, "cost"), per_user(planned, actions, "acceptance")
    return pred.assign(
        risk_tier=tier,
        segment=segment,
        planned_action=planned,
        expected_cost=cost,
        acceptance=acceptance,
        expected_profit=expected_profit(
            p, acceptance=acceptance, value=value, cost=cost, waste=float(waste)
        ),
    )


def rank_candidates(users: pd.DataFrame) -> pd.DataFrame:
    """The users with an action, best first: expected profit, then p_churn x value, then user id,
    so the order is total and does not depend on the row order of the input."""
    cand = np.flatnonzero(users["planned_action"].to_numpy() != NO_ACTION)
    if not len(cand):
        raise DataError(
            "the rules give no user an action: check retention.rules against the tiers and segments"
        )
    uid = users["user_id"].astype(str).to_numpy()[cand]
    at_risk = (users["p_churn"] * users["value_12m"]).to_numpy()[cand]
    profit = users["expected_profit"].to_numpy()[cand]
    ranked = users.iloc[cand[np.lexsort((uid, -at_risk, -profit))]].reset_index(drop=True)
    if ranked["expected_profit"].iloc[0] <= 0:
        raise DataError(
            "no user has a positive expected profit: lower action costs, raise acceptance or "
            "change the rules"
        )
    return ranked


def cut_at_budget(ranked: pd.DataFrame, budget: float | None) -> int:
    """How many ranked users the plan takes (see `select_users`)."""
    first_cost = ranked["expected_cost"].iloc[0]
    if budget is not None and float(budget) < first_cost:
        raise DataError(
            f"retention.budget {budget} is below the cost of one action ({first_cost:g} for a "
            f"{ranked['planned_action'].iloc[0]}, the first in the ranking)"
        )
    cost = ranked["expected_cost"].to_numpy()
    return select_users(ranked["expected_profit"].to_numpy(), cost, budget)


def assemble_plan(
    selected: pd.DataFrame,
    is_control: np.ndarray,
    actions: Mapping,
    events: pd.DataFrame | None,
    intervene_default_days: int,
) -> pd.DataFrame:
    """The plan's columns (README) for the selected users, in rank order."""
    planned = selected["planned_action"].to_numpy()
    p, value = selected["p_churn"].to_numpy(), selected["value_12m"].to_numpy()
    keep = ["user_id", "cutoff", "risk_tier", "segment"]
    keep += [c for c in ("cluster",) if c in selected.columns]
    keep += ["p_churn", "value_12m", "value_at_risk", "planned_action"]
    out = selected[keep].reset_index(drop=True)
    out["action"] = np.where(is_control, NO_ACTION, planned).astype(object)
    targets = Targets(out["user_id"].to_numpy(), out["cutoff"].to_numpy(), events)
    for column, values in action_columns(planned, actions, targets).items():
        out[column] = values
    out["expected_cost"] = selected["expected_cost"].to_numpy()
    out["expected_saved_value"] = p * selected["acceptance"].to_numpy() * value
    out["expected_profit"] = selected["expected_profit"].to_numpy()
    has_tau = "tau_median_days" in selected.columns
    tau = selected["tau_median_days"].to_numpy(np.float64) if has_tau else None
    out["intervene_by"] = intervene_by(
        out["cutoff"], tau, default_days=intervene_default_days, p_churn=p
    )
    out["group"] = np.where(is_control, "control", "treated").astype(object)
    out["rank"] = np.arange(1, len(out) + 1)
    return out


def profit_curve(ranked: pd.DataFrame, n_sel: int, n_users: int) -> pd.DataFrame:
    """Every candidate in rank order with cumulative cost and profit, and whether it was taken."""
    n = len(ranked)
    return pd.DataFrame(
        {
            "user_id": ranked["user_id"].astype(str).to_numpy(),
            "action": ranked["planned_action"].to_numpy(),
            "expected_profit": ranked["expected_profit"].to_numpy(),
            "cum_cost": np.cumsum(ranked["expected_cost"].to_numpy()),
            "cum_profit": np.cumsum(ranked["expected_profit"].to_numpy()),
            "share_targeted": np.arange(1, n + 1) / n_users,
            "selected": np.arange(n) < n_sel,
        }
    )


def _stopped_by(ranked_profit: np.ndarray, n_sel: int) -> str:
    if n_sel == len(ranked_profit):
        return "candidates"  # every user with an action was taken
    return "budget" if ranked_profit[n_sel] > 0 else "profit"


def plan_summary(plan: pd.DataFrame, curve: pd.DataFrame, n_users: int, budget) -> dict:
    """Counts, costs and expected profit of the plan, and why the ranked list was cut."""
    treated = plan["group"] == "treated"
    by_tier = plan.groupby(["risk_tier", "group"]).size().unstack(fill_value=0)
    return {
        "users": n_users,
        "candidates": len(curve),
        "selected": len(plan),
        "treated": int(treated.sum()),
        "control": int((~treated).sum()),
        "cost_selected": float(plan["expected_cost"].sum()),
        "cost_treated": float(plan.loc[treated, "expected_cost"].sum()),
        "expected_profit_treated": float(plan.loc[treated, "expected_profit"].sum()),
        "budget": None if budget is None else float(budget),
        "stopped_by": _stopped_by(curve["expected_profit"].to_numpy(), len(plan)),
        "by_tier": by_tier.to_dict(orient="index"),
        "by_action": plan["planned_action"].value_counts().to_dict(),
    }


def make_plan(
    predictions: pd.DataFrame,
    actions: Mapping,
    rules: Sequence[Mapping],
    budget: float | None = None,
    waste: float = 1.0,
    control_share: float = 0.1,
    seed: int = 0,
    intervene_default_days: int = 90,
    events: pd.DataFrame | None = None,
    tiers: Mapping | None = None,
) -> Plan:
    """The retention plan for a frame of predictions (DESIGN section 6 columns).

    The keyword names are the keys of `retention` in conf/retention/default.yaml, so
    `make_plan(predictions, **retention, seed=..., events=...)` works.

    Args:
        predictions: one row per user: `user_id`, `cutoff`, `p_churn`, `value_12m`,
            `value_at_risk`, and when present `risk_tier`, `segment`, `cluster`,
            `tau_median_days`.
        actions: `retention.actions`: per registered action (actions.ACTIONS) its `cost`,
            `acceptance` and its own settings.
        rules: `retention.rules`: first match wins (see `rules.apply_rules`).
        budget: most money the selected users' actions may cost (control users included, so
            the campaign never overspends); None = no budget, cut only at zero profit.
        waste: share of an action's cost lost on a customer who would have stayed anyway.
        control_share: share of each tier's selected users put in the control group.
        seed: seed of the control group.
        intervene_default_days: intervene-by lead when the time to churn is unknown.
        events: cleaned events for recommendations (their `event_type` may hold categories).
        tiers: `retention.tiers` settings used only when the predictions lack `risk_tier`.

    Returns:
        Plan with `plan` (selected users in rank order), `curve` (every candidate with an
        action, in rank order, with cumulative cost and profit) and `summary`.
    """
    actions = check_actions(actions)
    rules = check_rules(rules, actions)
    check_settings(budget, waste, control_share)
    users = score_users(
        check_predictions(predictions), actions=actions, rules=rules, tiers=tiers, waste=waste
    )
    ranked = rank_candidates(users)
    n_sel = cut_at_budget(ranked, budget)
    selected = ranked.iloc[:n_sel]
    uid = selected["user_id"].astype(str).to_numpy()
    is_control = control_group(
        uid, selected["risk_tier"].to_numpy(), share=float(control_share), seed=seed
    )
    plan = assemble_plan(
        selected,
        is_control,
        actions=actions,
        events=events,
        intervene_default_days=intervene_default_days,
    )
    curve = profit_curve(ranked, n_sel, len(users))
    return Plan(plan, curve, plan_summary(plan, curve, len(users), budget))

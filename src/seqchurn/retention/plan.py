"""Predictions -> a retention plan: actions by rule, ranked by expected profit, cut at the budget, with a control group.

The pipeline (DESIGN section 7), each step a plain function on arrays or frames:

1. `apply_rules`: the first matching rule maps (tier, segment, value) to an action.
2. `expected_profit` = p_churn x acceptance x (value - cost) - cost x (1 - p_churn) x waste,
   where value is what the customer is worth over the next 12 months if kept:
   value_at_risk / p_churn (predict writes value_at_risk = p_churn x that value).
3. `select_users`: rank by expected profit and keep the prefix that fits the budget and
   whose marginal profit is still positive.
4. `control_group`: a seeded random share of the selected users of each tier gets nothing.
5. `recommend`: each user's most bought categories (or event types), else the most popular.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from seqchurn.data.events import clean_events, load_events, read_table, rename_columns
from seqchurn.errors import DataError
from seqchurn.io import atomic_write
from seqchurn.retention.tiers import _tier_index, tier_cutpoints

ACTION_KINDS = ("coupon", "recommendation", "care_contact")
NO_ACTION = "none"
REQUIRED_COLUMNS = ("user_id", "cutoff", "p_churn", "value_at_risk")
_ACTION_KEYS = {
    "coupon": {"cost", "acceptance", "coupon_value"},
    "recommendation": {"cost", "acceptance", "n_items"},
    "care_contact": {"cost", "acceptance"},
}
_RULE_KEYS = {"tier", "segment", "min_value", "max_value", "action"}


@dataclass
class Plan:
    """The plan (one row per selected user), the ranked candidates behind it, and a summary."""

    plan: pd.DataFrame
    curve: pd.DataFrame
    summary: dict = field(default_factory=dict)


def check_actions(actions: Mapping) -> dict[str, dict]:
    """Validate `retention.actions`: known names and keys, cost >= 0, acceptance in [0, 1]."""
    out = {}
    for name, spec in dict(actions or {}).items():
        if name not in ACTION_KINDS:
            raise DataError(f"unknown action {name!r} in retention.actions: use {', '.join(ACTION_KINDS)}")
        spec = dict(spec or {})
        extra = set(spec) - _ACTION_KEYS[name]
        if extra:
            raise DataError(
                f"retention.actions.{name} has unknown key(s) {sorted(extra)}; allowed {sorted(_ACTION_KEYS[name])}"
            )
        cost, acc = float(spec.get("cost", 0.0)), float(spec.get("acceptance", 0.0))
        if cost < 0 or not 0 <= acc <= 1:
            raise DataError(f"retention.actions.{name} needs cost >= 0 and acceptance in [0, 1], got {cost} and {acc}")
        out[name] = {**spec, "cost": cost, "acceptance": acc}
    if not out:
        raise DataError("retention.actions is empty: define at least one of " + ", ".join(ACTION_KINDS))
    return out


def check_rules(rules: Sequence[Mapping], actions: Mapping) -> list[dict]:
    """Validate `retention.rules`: each names a defined action (or none) and only known conditions."""
    out = []
    for i, rule in enumerate(list(rules or [])):
        rule = dict(rule)
        extra = set(rule) - _RULE_KEYS
        if extra:
            raise DataError(f"retention.rules[{i}] has unknown key(s) {sorted(extra)}; allowed {sorted(_RULE_KEYS)}")
        action = rule.get("action")
        if action != NO_ACTION and action not in actions:
            raise DataError(
                f"unknown action {action!r} in retention.rules[{i}]: use one of {[*actions, NO_ACTION]}"
            )
        out.append(rule)
    if not out:
        raise DataError("retention.rules is empty: add at least one rule mapping (tier, segment, value) to an action")
    return out


def _as_list(value) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def apply_rules(tier: np.ndarray, segment: np.ndarray, value: np.ndarray, rules: Sequence[Mapping]) -> np.ndarray:
    """Action of each user: the first rule whose conditions all hold; `none` when no rule matches.

    A rule's conditions are `tier` and `segment` (a name or a list of names), `min_value`
    and `max_value` (on the 12-month value, inclusive); a missing condition always holds.
    """
    n = len(tier)
    action = np.full(n, NO_ACTION, dtype=object)
    open_ = np.ones(n, dtype=bool)
    tier, segment = np.asarray(tier).astype(str), np.asarray(segment).astype(str)
    for rule in rules:
        hit = open_.copy()
        if (tiers := _as_list(rule.get("tier"))) is not None:
            hit &= np.isin(tier, tiers)
        if (segs := _as_list(rule.get("segment"))) is not None:
            hit &= np.isin(segment, segs)
        if rule.get("min_value") is not None:
            hit &= value >= float(rule["min_value"])
        if rule.get("max_value") is not None:
            hit &= value <= float(rule["max_value"])
        action[hit] = rule["action"]
        open_ &= ~hit
    return action


def expected_profit(
    p: np.ndarray, acceptance: np.ndarray, value: np.ndarray, cost: np.ndarray, waste: float
) -> np.ndarray:
    """p x acceptance x (value - cost) - cost x (1 - p) x waste, per user."""
    return p * acceptance * (value - cost) - cost * (1.0 - p) * waste


def select_users(profit: np.ndarray, cost: np.ndarray, budget: float | None) -> np.ndarray:
    """How many of the users, already in rank order, to take: positive profit and within budget."""
    positive = profit > 0
    n = int(np.argmin(positive)) if not positive.all() else len(profit)  # first non-positive
    if budget is not None:
        n = min(n, int(np.searchsorted(np.cumsum(cost), float(budget) * (1 + 1e-12), side="right")))
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
    tier = np.asarray(tier).astype(str)
    frame = pd.DataFrame({"tier": tier, "key": key})
    pos = frame.groupby("tier")["key"].rank(method="first").to_numpy() - 1  # 0-based position in tier
    size = frame.groupby("tier")["key"].transform("size").to_numpy()
    return pos < np.floor(share * size + 0.5)


def recommend(events: pd.DataFrame, user_ids: np.ndarray, cutoff_day: int, n_items: int = 3) -> np.ndarray:
    """Each user's `n_items` most frequent `event_type` values on or before the cutoff, "; "-joined.

    The caller puts the category (or item) in `event_type` when the data has one. Ties go to
    the more popular value overall; users with no history get the most popular values; when
    the data has a single value there is nothing to recommend and the result is "".
    """
    past = events.loc[events["day"].to_numpy() <= cutoff_day, ["user_id", "event_type"]]
    popularity = past["event_type"].value_counts()
    if len(popularity) < 2 or n_items < 1:
        return np.full(len(user_ids), "", dtype=object)
    popular = "; ".join(sorted(popularity.index[:n_items], key=lambda v: (-popularity[v], v)))
    wanted = past[past["user_id"].isin(set(user_ids))]
    counts = wanted.groupby(["user_id", "event_type"]).size().rename("n").reset_index()
    counts["pop"] = popularity.reindex(counts["event_type"]).to_numpy()
    counts = counts.sort_values(["user_id", "n", "pop", "event_type"], ascending=[True, False, False, True])
    counts["pos"] = counts.groupby("user_id").cumcount()
    top = counts[counts["pos"] < n_items].pivot(index="user_id", columns="pos", values="event_type")
    joined = top[0].astype(str)
    for j in range(1, top.shape[1]):
        nxt = top[j]
        joined = joined.where(nxt.isna(), joined + "; " + nxt.astype(str))
    return pd.Series(joined).reindex(user_ids).fillna(popular).to_numpy(dtype=object)


def intervene_by(
    cutoff: pd.Series, tau_median_days: np.ndarray | None, default_days: int, p_churn: np.ndarray | None = None
) -> np.ndarray:
    """cutoff + floor(tau_median_days), the expected churn date; the cutoff itself when the user is
    already likely silent (p_churn >= 0.5); cutoff + `default_days` when the median is unknown."""
    tau = np.full(len(cutoff), np.nan) if tau_median_days is None else np.asarray(tau_median_days, dtype=np.float64)
    if p_churn is not None:  # a model without time bins still knows who is likely gone already
        tau = np.where(np.asarray(p_churn) >= 0.5, 0.0, tau)
    days = np.where(np.isnan(tau), float(default_days), np.floor(np.maximum(tau, 0.0)))
    return (pd.to_datetime(cutoff).to_numpy() + pd.to_timedelta(days, unit="D").to_numpy()).astype("datetime64[ns]")


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read a predictions file (Parquet or CSV) and check the columns the plan needs."""
    frame = read_table(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"predictions {path} lack column(s) {missing}; it has {list(frame.columns)}")
    if pd.api.types.is_float_dtype(frame["user_id"]):
        frame["user_id"] = frame["user_id"].astype("Int64")
    frame["user_id"] = frame["user_id"].astype("string").astype(object)
    return frame


def _checked(predictions: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in predictions.columns]
    if missing:
        raise DataError(f"predictions lack column(s) {missing}; they have {list(predictions.columns)}")
    if not len(predictions):
        raise DataError("the predictions have no rows")
    if predictions["user_id"].isna().any() or predictions["user_id"].duplicated().any():
        raise DataError("predictions need one row per user: user_id is null or duplicated")
    p = pd.to_numeric(predictions["p_churn"], errors="coerce").to_numpy(np.float64)
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise DataError("p_churn must be a probability in [0, 1] for every user")
    var = pd.to_numeric(predictions["value_at_risk"], errors="coerce").to_numpy(np.float64)
    if not np.isfinite(var).all() or (var < 0).any():
        raise DataError("value_at_risk must be a number >= 0 for every user")
    try:
        cutoff = pd.to_datetime(predictions["cutoff"])
    except (ValueError, TypeError) as err:
        raise DataError(f"cannot read the cutoff column as dates: {err}") from err
    if cutoff.isna().any():
        raise DataError("the cutoff column has empty dates")
    out = predictions.copy()
    out["cutoff"], out["p_churn"], out["value_at_risk"] = cutoff.astype("datetime64[ns]"), p, var
    return out.reset_index(drop=True)


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

    Args:
        predictions: one row per user: `user_id`, `cutoff`, `p_churn`, `value_at_risk`, and
            when present `risk_tier`, `segment`, `cluster`, `tau_median_days`.
        actions: `retention.actions`: per action name (coupon, recommendation, care_contact)
            its `cost`, `acceptance` and `coupon_value` / `n_items`.
        rules: `retention.rules`: first match wins (see `apply_rules`).
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
    if budget is not None and float(budget) < 0:
        raise DataError(f"retention.budget must be >= 0 or null, got {budget}")
    if waste < 0:
        raise DataError(f"retention.waste must be >= 0, got {waste}")
    pred = _checked(predictions)
    n_users = len(pred)
    p = pred["p_churn"].to_numpy()
    value = np.divide(pred["value_at_risk"].to_numpy(), p, out=np.zeros(n_users), where=p > 0)
    if "risk_tier" in pred.columns and pred["risk_tier"].notna().all():
        tier = pred["risk_tier"].astype(str).to_numpy(dtype=object)
    else:  # no fitted tiers in the file: cut this population by the settings
        settings = {k: v for k, v in dict(tiers or {}).items() if k in ("method", "names", "top_shares", "cutpoints")}
        names = np.asarray(list(settings.get("names", ("high", "medium", "low"))), dtype=object)
        tier = names[_tier_index(p, tier_cutpoints(p, **settings))]
    if "segment" in pred.columns:
        segment = pred["segment"].astype(str).to_numpy(dtype=object)
    else:
        segment = np.full(n_users, "unknown", dtype=object)

    planned = apply_rules(tier, segment, value, rules)
    cost_of = {**{k: v["cost"] for k, v in actions.items()}, NO_ACTION: 0.0}
    acc_of = {**{k: v["acceptance"] for k, v in actions.items()}, NO_ACTION: 0.0}
    cost = pd.Series(planned).map(cost_of).to_numpy(np.float64)
    acceptance = pd.Series(planned).map(acc_of).to_numpy(np.float64)
    profit = expected_profit(p, acceptance, value, cost, float(waste))

    cand = np.flatnonzero(planned != NO_ACTION)
    if not len(cand):
        raise DataError("the rules give no user an action: check retention.rules against the tiers and segments")
    # rank: expected profit, then p_churn x value, then user id, so the order is total
    uid = pred["user_id"].astype(str).to_numpy()
    cand = cand[np.lexsort((uid[cand], -(p * value)[cand], -profit[cand]))]
    if profit[cand[0]] <= 0:
        raise DataError(
            "no user has a positive expected profit: lower action costs, raise acceptance or change the rules"
        )
    if budget is not None and float(budget) < cost[cand[0]]:
        raise DataError(
            f"retention.budget {budget} is below the cost of one action "
            f"({cost[cand[0]]:g} for a {planned[cand[0]]}, the first in the ranking)"
        )
    n_sel = select_users(profit[cand], cost[cand], budget)
    sel = cand[:n_sel]

    is_control = control_group(uid[sel], tier[sel], float(control_share), seed)
    out = pd.DataFrame({"user_id": pred["user_id"].to_numpy()[sel], "cutoff": pred["cutoff"].to_numpy()[sel]})
    out["risk_tier"] = tier[sel]
    out["segment"] = segment[sel]
    if "cluster" in pred.columns:
        out["cluster"] = pred["cluster"].to_numpy()[sel]
    out["p_churn"] = p[sel]
    out["value_12m"] = value[sel]
    out["value_at_risk"] = pred["value_at_risk"].to_numpy()[sel]
    out["planned_action"] = planned[sel]
    out["action"] = np.where(is_control, NO_ACTION, planned[sel]).astype(object)
    coupon = actions.get("coupon", {}).get("coupon_value", np.nan)
    out["coupon_value"] = np.where(planned[sel] == "coupon", float(coupon), np.nan)
    out["recommended"] = _recommendations(out, events, actions)
    out["expected_cost"] = cost[sel]
    out["expected_saved_value"] = p[sel] * acceptance[sel] * value[sel]
    out["expected_profit"] = profit[sel]
    tau = pred["tau_median_days"].to_numpy(np.float64)[sel] if "tau_median_days" in pred.columns else None
    out["intervene_by"] = intervene_by(out["cutoff"], tau, intervene_default_days, p[sel])
    out["group"] = np.where(is_control, "control", "treated").astype(object)
    out["rank"] = np.arange(1, n_sel + 1)

    curve = pd.DataFrame(
        {
            "user_id": uid[cand],
            "action": planned[cand],
            "expected_profit": profit[cand],
            "cum_cost": np.cumsum(cost[cand]),
            "cum_profit": np.cumsum(profit[cand]),
            "share_targeted": np.arange(1, len(cand) + 1) / n_users,
            "selected": np.arange(len(cand)) < n_sel,
        }
    )
    treated = out["group"] == "treated"
    summary = {
        "users": n_users,
        "candidates": int(len(cand)),
        "selected": int(n_sel),
        "treated": int(treated.sum()),
        "control": int((~treated).sum()),
        "cost_selected": float(cost[sel].sum()),
        "cost_treated": float(out.loc[treated, "expected_cost"].sum()),
        "expected_profit_treated": float(out.loc[treated, "expected_profit"].sum()),
        "budget": None if budget is None else float(budget),
        "stopped_by": _stopped_by(profit[cand], n_sel),
        "by_tier": out.groupby(["risk_tier", "group"]).size().unstack(fill_value=0).to_dict(orient="index"),
        "by_action": out["planned_action"].value_counts().to_dict(),
    }
    return Plan(out, curve, summary)


def _stopped_by(ranked_profit: np.ndarray, n_sel: int) -> str:
    if n_sel == len(ranked_profit):
        return "candidates"  # every user with an action was taken
    return "budget" if ranked_profit[n_sel] > 0 else "profit"


def _recommendations(out: pd.DataFrame, events: pd.DataFrame | None, actions: Mapping) -> np.ndarray:
    rec = np.full(len(out), "", dtype=object)
    wants = (out["planned_action"] == "recommendation").to_numpy()
    if events is None or not wants.any():
        return rec
    n_items = int(actions.get("recommendation", {}).get("n_items", 3))
    cutoffs = out.loc[wants, "cutoff"].to_numpy().astype("datetime64[D]").astype(np.int64)
    for c in np.unique(cutoffs):  # one pass per plan date (usually one)
        rows = np.flatnonzero(wants)[cutoffs == c]
        rec[rows] = recommend(events, out["user_id"].to_numpy()[rows], int(c), n_items)
    return rec


def load_category_events(
    source: str = "cdnow",
    path: str | None = None,
    columns: Mapping[str, str] | None = None,
    category_column: str | None = None,
    activity_event_types: Sequence[str] | None = None,
    merge_same_day: bool = False,
    on_bad_rows: str = "raise",
) -> pd.DataFrame:
    """Cleaned events for `recommend`, with the category (when named) in `event_type`.

    With `category_column`, only the rows of `activity_event_types` (e.g. purchases) are kept
    and each row's category replaces its event type; rows without a category are dropped.
    """
    if category_column is None:
        return load_events(source, path, columns, on_bad_rows, merge_same_day)[0]
    if source != "events" or path is None:
        raise DataError("events.category_column needs events.source=events and events.path (CDNOW has no categories)")
    raw = read_table(path)
    if category_column not in raw.columns:
        raise DataError(f"events.category_column {category_column!r} is not in {path}; it has {list(raw.columns)}")
    frame = rename_columns(raw, columns)
    keep = raw[category_column].notna().to_numpy()
    if activity_event_types and "event_type" in frame.columns:
        keep &= frame["event_type"].astype(str).isin([str(t) for t in activity_event_types]).to_numpy()
    frame = frame.loc[keep].assign(event_type=raw.loc[keep, category_column].astype(str).to_numpy())
    return clean_events(frame, on_bad_rows=on_bad_rows, merge_same_day=merge_same_day)[0]


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write Parquet (CSV when the name ends .csv) through a temp name, then rename."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
    return atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def curve_path(output: str | Path) -> Path:
    """Where the profit curve goes: beside the plan, `<name>_profit_curve.png`."""
    output = Path(output)
    return output.with_name(f"{output.stem}_profit_curve.png")


def plot_profit_curve(curve: pd.DataFrame, path: str | Path) -> Path:
    """Cumulative expected profit against the share of users targeted, the cut marked; PNG, atomic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.concatenate([[0.0], curve["share_targeted"].to_numpy()])
    y = np.concatenate([[0.0], curve["cum_profit"].to_numpy()])
    ax.plot(x, y, color="tab:blue", label="ranked by expected profit")
    n_sel = int(curve["selected"].sum())
    ax.axvline(x[n_sel], color="tab:red", linestyle="--", label=f"cut: {n_sel} users")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("share of users targeted")
    ax.set_ylabel("cumulative expected profit")
    ax.legend(loc="best")
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)

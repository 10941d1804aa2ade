"""A known treatment effect for the synthetic BG/NBD customers (DESIGN 7, campaign evaluation).

`simulate_potential_outcomes` continues the BG/NBD process of `simulate_bgnbd` from the
plan date C, for every customer eligible at C, twice from the same random draws: once
untreated and once treated. Treatment works in two ways, both from C on:

- **rescue**: a customer who has already dropped out (dead at C) comes back to life with
  probability `rescue_prob` (the action's acceptance), keeping their purchase rate;
- **dropout reduction**: the dropout probability after each purchase is multiplied by
  (1 - `dropout_reduction`).

Alive customers buy at the times of one shared Poisson stream in both worlds, and each
purchase's dropout compares one shared uniform with p or the lowered p, so the two worlds
differ only where the treatment acts. The true average effect on the treated is then the
mean of (treated - untreated) outcomes of the users that get the action.

Time runs in weeks since `start`, as in simulate/bgnbd.py; the window is days (C, C+H],
i.e. weeks [t_C, t_C + H/7) with t_C the midnight after day C.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from seqchurn.errors import DataError, check_settings
from seqchurn.io import check_outputs, read_user_table, write_table
from seqchurn.simulate.bgnbd import simulate_bgnbd
from seqchurn.data.timestamps import config_day

_NS_PER_WEEK = 7 * 86_400 * 10**9
EVENT_COLUMNS = ("user_id", "timestamp", "event_type", "amount", "quantity")


def _day_of(ts: pd.Series) -> np.ndarray:
    return pd.to_datetime(ts).to_numpy().astype("datetime64[D]").astype(np.int64)


def simulate_potential_outcomes(
    events: pd.DataFrame,
    truth: pd.DataFrame,
    cutoff_day: int,
    horizon_days: int,
    rescue_prob: float | pd.Series = 0.0,
    dropout_reduction: float = 0.0,
    seed: int = 0,
    start: str | pd.Timestamp = "2020-01-01",
    amount_sigma: float = 0.5,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both potential outcomes in (C, C+H] of every customer with a purchase on or before day C.

    Args:
        events: the generator's events (only purchases on or before C are read).
        truth: the generator's truth table (`user_id`, `lam`, `p`, `death_week`); C must lie
            inside the simulated period so `death_week` tells who is alive at C.
        cutoff_day: C, days since 1970-01-01 (the plan date).
        horizon_days: H.
        rescue_prob: probability that a dead customer is brought back if treated; a float, or
            a Series indexed by user_id (missing users: 0), e.g. the acceptance of each
            user's planned action.
        dropout_reduction: relative cut of the dropout probability of treated customers.
        seed: seed of the continuation's draws.
        start: week 0 of the generator.
        amount_sigma: spread of log amounts around each customer's historical mean log amount.

    Returns:
        outcomes: one row per eligible user, sorted by user: `user_id`, `alive_at_cutoff`,
            `churn_untreated`, `churn_treated` (0/1: no purchase in the window),
            `value_untreated`, `value_treated` (spend in the window).
        post: purchases after C in contract columns plus `in_untreated`, `in_treated`
            (whether the purchase happens in each world).
    """
    if horizon_days <= 0:
        raise DataError(f"horizon_days must be positive, got {horizon_days}")
    if not 0 <= dropout_reduction <= 1:
        raise DataError(f"dropout_reduction must be in [0, 1], got {dropout_reduction}")
    start_ts = pd.Timestamp(start)
    start_day = int(np.datetime64(start_ts.date(), "D").astype(np.int64))
    t_c = (cutoff_day + 1 - start_day) / 7.0
    t_end = t_c + horizon_days / 7.0

    day = _day_of(events["timestamp"])
    hist = events.loc[day <= cutoff_day, ["user_id", "amount"]]
    if not len(hist):
        raise DataError("no purchase on or before the plan date: nobody to simulate")
    log_amount = np.log(hist["amount"].clip(lower=1e-9).to_numpy(np.float64))
    mu_user = pd.Series(log_amount).groupby(hist["user_id"].to_numpy()).mean()
    users = np.asarray(mu_user.index, dtype=object)  # sorted
    tr = truth.set_index("user_id").reindex(users)
    if tr["lam"].isna().any():
        raise DataError("some users of the events are missing from the truth table")
    lam, p = tr["lam"].to_numpy(np.float64), tr["p"].to_numpy(np.float64)
    alive0 = tr["death_week"].to_numpy(np.float64) > t_c
    n = len(users)
    if isinstance(rescue_prob, pd.Series):
        rescue = rescue_prob.reindex(users).fillna(0.0).to_numpy(np.float64)
    else:
        rescue = np.full(n, float(rescue_prob))
    if (rescue < 0).any() or (rescue > 1).any():
        raise DataError("rescue_prob must be in [0, 1]")
    p_treated = p * (1.0 - dropout_reduction)

    rng = np.random.default_rng(seed)
    u_rescue = rng.random(n)
    alive1 = alive0 | (u_rescue < rescue)  # the treated world's customers alive at C
    mu = mu_user.to_numpy(np.float64)

    rows_user, rows_t, rows_amt, rows_in0, rows_in1 = [], [], [], [], []
    t_last = np.full(n, t_c)  # memoryless: the next purchase after C is an exponential gap away
    play = np.flatnonzero(
        alive1
    )  # alive1 contains alive0, so these are all users who can still buy
    while play.size:
        with np.errstate(divide="ignore"):  # lambda may underflow to 0: never buys
            t_next = t_last[play] + rng.standard_exponential(play.size) / lam[play]
        u_drop = rng.random(play.size)
        z = rng.standard_normal(play.size)
        buys = t_next < t_end
        play, t_next, u_drop, z = play[buys], t_next[buys], u_drop[buys], z[buys]
        rows_user.append(play)
        rows_t.append(t_next)
        rows_amt.append(np.exp(mu[play] + amount_sigma * z))
        rows_in0.append(alive0[play].copy())
        rows_in1.append(alive1[play].copy())
        t_last[play] = t_next
        alive0[play] &= ~(u_drop < p[play])
        alive1[play] &= ~(u_drop < p_treated[play])
        play = play[alive1[play]]

    idx = np.concatenate(rows_user) if rows_user else np.zeros(0, np.int64)
    t = np.concatenate(rows_t) if rows_t else np.zeros(0)
    amt = np.concatenate(rows_amt) if rows_amt else np.zeros(0)
    in0 = np.concatenate(rows_in0) if rows_in0 else np.zeros(0, bool)
    in1 = np.concatenate(rows_in1) if rows_in1 else np.zeros(0, bool)
    order = np.lexsort((t, idx))
    idx, t, amt, in0, in1 = idx[order], t[order], amt[order], in0[order], in1[order]

    value0 = np.bincount(idx, weights=amt * in0, minlength=n)
    value1 = np.bincount(idx, weights=amt * in1, minlength=n)
    buys0 = np.bincount(idx, weights=in0, minlength=n)
    buys1 = np.bincount(idx, weights=in1, minlength=n)
    outcomes = pd.DataFrame(
        {
            "user_id": users,
            "alive_at_cutoff": tr["death_week"].to_numpy(np.float64) > t_c,
            "churn_untreated": (buys0 == 0).astype(np.int8),
            "churn_treated": (buys1 == 0).astype(np.int8),
            "value_untreated": value0,
            "value_treated": value1,
        }
    )
    ns = np.round(t * _NS_PER_WEEK).astype(np.int64)
    post = pd.DataFrame(
        {
            "user_id": users[idx],
            "timestamp": pd.Series(start_ts.value + ns).astype("datetime64[ns]"),
            "event_type": np.full(len(idx), "purchase", dtype=object),
            "amount": amt,
            "quantity": np.ones(len(idx)),
            "in_untreated": in0,
            "in_treated": in1,
        }
    )
    return outcomes, post


def observed_events(
    events: pd.DataFrame, post: pd.DataFrame, cutoff_day: int, treated_users
) -> pd.DataFrame:
    """The log the shop sees: history up to day C, then each user's world (treated or not).

    Returns contract columns, sorted by user and time.
    """
    treated = post["user_id"].isin(set(treated_users)).to_numpy()
    keep = np.where(treated, post["in_treated"].to_numpy(), post["in_untreated"].to_numpy())
    history = events.loc[_day_of(events["timestamp"]) <= cutoff_day, list(EVENT_COLUMNS)]
    out = pd.concat([history, post.loc[keep, list(EVENT_COLUMNS)]], ignore_index=True)
    return out.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)


def true_effect(outcomes: pd.DataFrame, treated_users) -> dict:
    """The true average effect on the treated, in churn-rate points and in window value per user."""
    sel = outcomes["user_id"].isin(set(treated_users)).to_numpy()
    if not sel.any():
        raise DataError("none of the treated users is among the simulated customers")
    o = outcomes.loc[sel]
    return {
        "n_treated": int(sel.sum()),
        "churn": float((o["churn_treated"] - o["churn_untreated"]).mean()),
        "value": float((o["value_treated"] - o["value_untreated"]).mean()),
        "saved_value": float((o["value_treated"] - o["value_untreated"]).sum()),
    }


STEPS = ("history", "outcome")


def simulate_campaign(
    step: str,
    out: str,
    customers: Mapping,
    actions: Mapping[str, Mapping],
    cutoff: str,
    horizon_days: int,
    outcome_seed: int,
    plan: str | None = None,
) -> str:
    """Write the shop's log of synthetic customers before (`history`) or after (`outcome`) a plan.

    Both steps regenerate the same customers. `outcome` continues them after the plan date in
    two worlds from the same draws; a treated customer of the plan (group "treated") who had
    dropped out comes back with the acceptance of their planned action.

    Args:
        step: "history" or "outcome".
        out: the event log to write (.csv, or .parquet).
        customers: keyword arguments of `simulate_bgnbd` (the `data.synthetic` node).
        actions: `retention.actions`, read for each action's `acceptance`.
        cutoff: the plan date.
        horizon_days: H of the window after it.
        outcome_seed: seed of the window's draws.
        plan: scripts/plan.py's output (step outcome).

    Returns:
        One line that says what was written; for `outcome`, with the true effect on the
        treated, which the evaluation's interval should cover.
    """
    if step not in STEPS:
        raise DataError(f"step must be one of {list(STEPS)}, got {step!r}")
    check_outputs([out], [plan])
    check_settings(
        {"n_users": customers.get("n_users")}, positive_int=True, prefix="data.synthetic."
    )
    # the node also names the DataModule's log builder; the truth table needs the generator
    params = {k: v for k, v in customers.items() if k != "_target_"}
    events, truth = simulate_bgnbd(**params)
    c = config_day(cutoff, "cutoff")
    if step == "history":
        hist = events.loc[_day_of(events["timestamp"]) <= c, list(EVENT_COLUMNS)]
        write_table(hist, out)
        users = hist["user_id"].nunique()
        return f"{len(hist)} events of {users} customers up to {cutoff} -> {out}"
    if plan is None:
        raise DataError("step=outcome needs plan=PLAN.parquet")
    planned = read_user_table(plan, ("group", "planned_action"), what="the plan")
    acceptance = {name: float(spec["acceptance"]) for name, spec in actions.items()}
    rescue = planned.set_index("user_id")["planned_action"].map(acceptance).fillna(0.0)
    outcomes, post = simulate_potential_outcomes(
        events, truth, c, horizon_days, rescue_prob=rescue, seed=outcome_seed, start=params["start"]
    )
    treated = planned.loc[planned["group"] == "treated", "user_id"]
    effect = true_effect(outcomes, treated)
    write_table(observed_events(events, post, c, treated), out)
    return (
        f"true effect on the {effect['n_treated']} treated: churn {effect['churn']:+.4f}, "
        f"window value per user {effect['value']:+.2f}, "
        f"saved value {effect['saved_value']:.2f} -> {out}"
    )

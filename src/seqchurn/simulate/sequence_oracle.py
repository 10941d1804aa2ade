"""The exact posterior oracle of the synthetic sequence process, and its clairvoyant score.

The oracle (spec `synthetic-sequence-process.md`, section 4) is the best any model can do from
the observed history: P(no purchase in the label window | events on or before the cutoff),
marginalised over the hidden base rate, segment and death. The clairvoyant score also sees the
hidden truth and bounds the oracle from above. Time conventions are those of
`sequence_process`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import gammaln

from seqchurn.errors import DataError
from seqchurn.simulate.sequence_process import (
    A,
    C,
    EVENT_TYPES,
    K_MAX,
    P,
    R,
    START,
    V,
    process_params,
    window_mass,
    state_tables,
    no_purchase_table,
)


def _history(events: pd.DataFrame, cutoff, start) -> dict:
    """Events on or before day C as sorted arrays with the observable state before/after each."""
    start_ts = pd.Timestamp(start)
    try:
        day = (
            pd.Timestamp(np.datetime64(int(cutoff), "D"))
            if isinstance(cutoff, (int, np.integer))
            else pd.Timestamp(cutoff)
        )
    except (ValueError, TypeError) as err:
        raise DataError(f"cannot read cutoff {cutoff!r} as a date (use YYYY-MM-DD)") from err
    t_c = (day.normalize() + pd.Timedelta(days=1) - start_ts) / pd.Timedelta(days=1)
    code = {name: i for i, name in enumerate(EVENT_TYPES)}
    ts = pd.to_datetime(events["timestamp"]).astype("datetime64[ns]").to_numpy().astype(np.int64)
    t = (ts - start_ts.value) / 86_400e9
    x = events["event_type"].map(code).to_numpy()
    seen = t < t_c
    if pd.isna(x[seen]).any():
        bad = sorted(set(events["event_type"][seen][pd.isna(x[seen])]))
        raise DataError(
            f"event types {bad} are not part of the sequence process {list(EVENT_TYPES)}"
        )
    uid = events["user_id"].to_numpy(dtype=object)[seen]
    t, x = t[seen], x[seen].astype(np.int64)
    # Hash-based codes: np.unique on an object array sorts strings, the slowest step here.
    ucode, users = pd.factorize(uid, sort=True)
    order = np.lexsort((t, ucode))
    ucode, t, x = ucode[order], t[order], x[order]
    starts = np.searchsorted(ucode, np.arange(len(users)))
    ends = np.append(starts[1:], len(t)) - 1
    if (x[starts] != P).any():
        raise DataError(
            "every user's first event must be a purchase (the process starts with one at T0)"
        )
    rows = np.arange(len(t))
    # Mood = complaints since the last purchase or refund, capped at 2.
    n_c = np.cumsum(x == C)
    last_reset = np.maximum.accumulate(np.where((x == P) | (x == R), rows, 0))
    state_after = 3 * x + np.minimum(n_c - n_c[last_reset], 2)
    first = np.zeros(len(t), dtype=bool)
    first[starts] = True
    state_before = np.where(first, 3 * P, np.roll(state_after, 1))
    return {
        "users": users,
        "ucode": ucode,
        "t": t,
        "x": x,
        "t_c": t_c,
        "starts": starts,
        "ends": ends,
        "first": first,
        "state_before": state_before,
        "state_after": state_after,
    }


def _cum_within(values: np.ndarray, starts: np.ndarray, ucode: np.ndarray) -> np.ndarray:
    """Cumulative sum of `values` restarting at each user's first row (inclusive)."""
    cs = np.cumsum(values)
    return cs - (cs - values)[starts][ucode]


def _segment_logsumexp(values: np.ndarray, starts: np.ndarray, ucode: np.ndarray) -> np.ndarray:
    top = np.maximum.reduceat(values, starts)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return safe + np.log(np.add.reduceat(np.exp(values - safe[ucode]), starts))


def _settled(u: np.ndarray) -> np.ndarray:
    """u up to the first k where it has reached u[K] to machine precision (about k = 300 of 600).

    The terms beyond are then folded into the tail mass, which gets that same limit: the sums
    over k keep their value to 1e-15 for half the work.
    """
    settled = np.flatnonzero(np.abs(u - u[-1]).max(axis=1) <= 1e-15)
    return u[: settled[0] + 1]


def _no_purchase_given_alive(
    r: float, n: np.ndarray, p: np.ndarray, state: np.ndarray, u: np.ndarray
) -> np.ndarray:
    """Q = sum_k NB(k; r + n, p) u[k, state], the mass beyond K getting u[K].

    The shape r + n takes one value per event count n, so log Gamma(r + n + k) is a lookup
    in one table instead of a gammaln per (user, k): the sum over k is the oracle's hot spot.
    """
    n = np.asarray(n, dtype=np.int64)
    u = _settled(u)
    k_all = np.arange(u.shape[0])
    lgam = gammaln(r + np.arange(int(n.max(initial=0)) + u.shape[0]))  # log Gamma(r + m)
    lfact = gammaln(k_all + 1.0)
    out = np.empty(len(n))
    for lo in range(0, len(n), 4096):
        nn, q, s = n[lo : lo + 4096], p[lo : lo + 4096, None], state[lo : lo + 4096]
        log_pmf = (
            lgam[nn[:, None] + k_all]
            - lgam[nn][:, None]
            - lfact
            + (r + nn[:, None]) * np.log(q)
            + k_all * np.log1p(-q)
        )
        pmf = np.exp(log_pmf)
        tail = np.clip(1.0 - pmf.sum(axis=1), 0.0, None)
        out[lo : lo + 4096] = (pmf * u[:, s].T).sum(axis=1) + tail * u[-1, s]
    return out


def sequence_oracle(
    events: pd.DataFrame,
    cutoff,
    horizon_days: int,
    start: str | pd.Timestamp = START,
    k_max: int = K_MAX,
    **params: float,
) -> pd.DataFrame:
    """Exact Bayes-optimal P(no purchase on days C+1..C+H | all events up to day C) (spec section 3).

    Args:
        events: events of the sequence process with `user_id`, `timestamp`, `event_type`.
        cutoff: the day C (included whole); date-like or int days since 1970-01-01.
        horizon_days: H, the label window in days.
        params: process parameters, by name, over SEQUENCE_PARAMS.
        start: day 0 of the process (the fading clock needs it only through T0, kept for clarity).
        k_max: truncation of the future event count.

    Returns:
        One row per user with an event on or before day C (= a first purchase): `user_id`,
        `p_churn_oracle`, `p_alive` (posterior probability of being alive at the end of day C),
        `mood` (observable mood after the last event), sorted by user.
    """
    r, alpha, p_fading, fade_days, rho, q_cart, p_mult = process_params(params)
    if horizon_days <= 0:
        raise ValueError(f"horizon_days must be positive, got {horizon_days}")
    hs = _history(events, cutoff, start)
    ucode, t, x, t_c, starts, ends = (hs[k] for k in ("ucode", "t", "x", "t_c", "starts", "ends"))
    trans, drop, _ = state_tables(p_mult)
    u = no_purchase_table(p_mult, k_max)

    s_prev = hs["state_before"]
    with np.errstate(divide="ignore"):
        log_pi = np.where(hs["first"], 0.0, np.log(trans[s_prev, x]))
        d_row = drop[s_prev, x]  # the first row gets D(., P) = D_0
        log_q = np.select([x == V, x == A], [np.log1p(-q_cart), np.log(q_cart)], 0.0)
    if np.isneginf(log_pi).any():
        # Every hypothesis would have likelihood 0 and the score would be 0/0: say why instead.
        bad = np.flatnonzero(np.isneginf(log_pi))[0]
        raise DataError(
            f"user {hs['users'][ucode[bad]]!r} has a {EVENT_TYPES[x[bad]]} right after a "
            f"{EVENT_TYPES[s_prev[bad] // 3]}, which the sequence process never emits"
        )
    # log S_j = sum_{i<=j} log pi_i + sum_{i<j} log(1 - D_i), within each user.
    log_s = (
        _cum_within(log_pi, starts, ucode)
        + _cum_within(np.log1p(-d_row), starts, ucode)
        - np.log1p(-d_row)
    )
    suffix_q = _cum_within(log_q, starts, ucode)[ends][ucode] - _cum_within(log_q, starts, ucode)
    rows = np.arange(len(t))
    j_min = np.maximum.accumulate(np.where((x == P) | (x == R) | (x == C), rows, 0))[ends]
    can_die = rows >= j_min[ucode]  # only views and carts may follow a death
    n = (ends - starts).astype(np.float64)
    t0 = t[starts]
    n_after = (ends[ucode] - rows).astype(np.float64)

    num_terms, den_terms = [], []
    for prior, delta in ((1.0 - p_fading, 0.0), (p_fading, 1.0 / fade_days)):
        if prior <= 0:
            continue
        log_g = -delta * np.add.reduceat(t - t0[ucode], starts)
        log_c = np.log(prior) + log_g + gammaln(r + n) - gammaln(r) + r * np.log(alpha)
        big_b = alpha + window_mass(t0, t_c, t0, delta)
        log_alive = log_c + log_s[ends] + np.log1p(-d_row[ends]) - (r + n) * np.log(big_b)
        b_dead = (
            alpha
            + window_mass(t0[ucode], t, t0[ucode], delta)
            + rho * window_mass(t, t_c, t0[ucode], delta)
        )
        log_dead_j = (
            log_c[ucode]
            + log_s
            + np.log(d_row)
            + n_after * np.log(rho)
            + suffix_q
            - (r + n[ucode]) * np.log(b_dead)
        )
        log_dead = _segment_logsumexp(np.where(can_die, log_dead_j, -np.inf), starts, ucode)
        future = window_mass(t_c, t_c + horizon_days, t0, delta)
        q_h = _no_purchase_given_alive(
            r, ends - starts, big_b / (big_b + future), hs["state_after"][ends], u
        )
        with np.errstate(divide="ignore"):
            num_terms += [log_dead, log_alive + np.log(q_h)]
        den_terms += [log_dead, log_alive]
    log_den = np.logaddexp.reduce(den_terms, axis=0)
    p_churn = np.exp(np.logaddexp.reduce(num_terms, axis=0) - log_den)
    p_alive = np.exp(np.logaddexp.reduce(den_terms[1::2], axis=0) - log_den)
    return pd.DataFrame(
        {
            "user_id": hs["users"],
            "p_churn_oracle": p_churn,
            "p_alive": p_alive,
            "mood": hs["state_after"][ends] % 3,
        }
    )


def sequence_clairvoyant(
    events: pd.DataFrame, truth: pd.DataFrame, cutoff, horizon_days: int, **options
) -> pd.DataFrame:
    """P(no purchase on days C+1..C+H | hidden alive state, lambda0 and segment at C): an upper bound.

    Args:
        truth: the simulator's per-user truth (`death_days`, `fading`, `T0_days`, `lam0`).
        options: `start`, `k_max` and process parameters, as for `sequence_oracle`.

    Returns:
        `user_id`, `p_churn_clairvoyant`, `alive` (bool), for the users `sequence_oracle` scores.
    """
    start, k_max = options.pop("start", START), options.pop("k_max", K_MAX)
    *_, fade_days, _, _, p_mult = process_params(options)
    hs = _history(events, cutoff, start)
    tr = truth.set_index("user_id").loc[hs["users"]]
    alive = tr["death_days"].to_numpy() >= hs["t_c"]
    delta = np.where(tr["fading"].to_numpy(), 1.0 / fade_days, 0.0)
    t0 = tr["T0_days"].to_numpy()
    mean = tr["lam0"].to_numpy() * window_mass(hs["t_c"], hs["t_c"] + horizon_days, t0, delta)
    u = _settled(no_purchase_table(p_mult, k_max))
    k = np.arange(len(u), dtype=np.float64)
    pmf = np.exp(k * np.log(mean[:, None]) - mean[:, None] - gammaln(k + 1))
    s = hs["state_after"][hs["ends"]]
    q = (pmf * u[:, s].T).sum(axis=1) + np.clip(1.0 - pmf.sum(axis=1), 0.0, None) * u[-1, s]
    return pd.DataFrame(
        {"user_id": hs["users"], "p_churn_clairvoyant": np.where(alive, q, 1.0), "alive": alive}
    )

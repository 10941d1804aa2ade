"""Synthetic sequence process where event order drives churn, and its exact posterior oracle.

The process and the oracle are specified in `synthetic-sequence-process.md` (DESIGN section 8).
Time inside the process is continuous and measured in days since `start`. Labels in the project
work in calendar days: the cutoff day C is included whole, so the history ends at t_c = C + 1
(the next midnight) and the label window is the continuous interval [t_c, t_c + H), i.e. the
calendar days C+1 .. C+H. The oracle and the clairvoyant score use exactly that window.

Observable state s = (last event type, mood), indexed 3 * type + mood (15 states).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import gammaln

from seqchurn.errors import DataError

EVENT_TYPES = ("view", "cart", "purchase", "return", "complaint")
V, A, P, R, C = range(5)
N_STATES = 15
K_MAX = 600  # truncation of the future event count in the oracle; the leftover mass gets u_K

# Process parameters shared by the generator and the oracle (spec section 2, final configuration F).
SEQUENCE_PARAMS = {
    "r": 2.0,  # gamma shape of the base rate lambda0 (events/day)
    "alpha": 12.0,  # gamma rate of lambda0
    "p_fading": 0.3,  # prior share of the fading segment
    "fade_days": 120.0,  # 1/delta: e-folding time of a fading user's rate
    "rho": 0.5,  # rate multiplier of lapsed (dead) browsing
    "q_cart": 0.3,  # share of carts among lapsed events
    "p_mult": (1.0, 0.10, 0.02),  # purchase probability multiplier by mood 0, 1, 2
}

# Mood-0 type probabilities; rows = last type, columns = next type (V, A, P, R, C).
_BASE_T = np.array(
    [
        [0.60, 0.30, 0.10, 0.00, 0.00],
        [0.45, 0.10, 0.45, 0.00, 0.00],
        [0.45, 0.15, 0.10, 0.15, 0.15],
        [0.50, 0.15, 0.10, 0.00, 0.25],
        [0.35, 0.10, 0.10, 0.35, 0.10],
    ]
)
_D0 = 0.005  # dropout right after the first purchase at T0


def next_mood(mood: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Mood after event x: a complaint escalates (cap 2); a purchase, or a refund, resets to 0."""
    mood, x = np.asarray(mood), np.asarray(x)
    return np.where(x == C, np.minimum(mood + 1, 2), np.where((x == P) | (x == R), 0, mood))


def _tables(p_mult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(15, 5) type probabilities T[s, x], (15, 5) dropout D[s, x] and (15, 5) next state."""
    p_mult = np.asarray(list(p_mult), dtype=np.float64)
    trans = np.zeros((N_STATES, 5))
    drop = np.zeros((N_STATES, 5))
    nxt = np.zeros((N_STATES, 5), dtype=np.int64)
    for prev in range(5):
        for m in range(3):
            s = 3 * prev + m
            row = _BASE_T[prev].copy()
            removed = row[P] * (1.0 - p_mult[m])
            row[P] -= removed
            row[V] += removed  # the probability taken from P goes to V
            trans[s] = row
            for x in range(5):
                m2 = int(next_mood(m, x))
                nxt[s, x] = 3 * x + m2
                drop[s, x] = {
                    V: 0.002 + 0.01 * (prev == A) + 0.08 * m2,
                    A: 0.002 + 0.08 * m2,
                    P: _D0,
                    R: 0.01 + 0.05 * m2,
                    C: 0.15 if m2 == 1 else 0.50,
                }[x]
    return trans, drop, nxt


def no_purchase_table(p_mult=SEQUENCE_PARAMS["p_mult"], k_max: int = K_MAX) -> np.ndarray:
    """u[k, s]: P(none of the next k alive events is a purchase | state s); death absorbs.

    Returns:
        (k_max + 1, 15) array with u[0] = 1.
    """
    trans, drop, nxt = _tables(p_mult)
    u = np.ones((k_max + 1, N_STATES))
    not_p = np.arange(5) != P
    for k in range(1, k_max + 1):
        cont = drop + (1.0 - drop) * u[k - 1][nxt]  # (15, 5)
        u[k] = (trans[:, not_p] * cont[:, not_p]).sum(axis=1)
    return u


def _mass(a, b, t0, delta):
    """G(a, b) = integral of exp(-delta (t - T0)) over (a, b); b - a when delta = 0."""
    a, b, t0, delta = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (a, b, t0, delta))
    )
    out = b - a
    fad = delta > 0
    d = delta[fad]
    out = out.copy()
    out[fad] = np.exp(-d * (a[fad] - t0[fad])) * -np.expm1(-d * (b[fad] - a[fad])) / d
    return out


def simulate_sequence(
    n_users: int = 2000,
    seed: int = 0,
    r: float = SEQUENCE_PARAMS["r"],
    alpha: float = SEQUENCE_PARAMS["alpha"],
    p_fading: float = SEQUENCE_PARAMS["p_fading"],
    fade_days: float = SEQUENCE_PARAMS["fade_days"],
    rho: float = SEQUENCE_PARAMS["rho"],
    q_cart: float = SEQUENCE_PARAMS["q_cart"],
    p_mult=SEQUENCE_PARAMS["p_mult"],
    acquisition_days: float = 360.0,
    end_days: float = 540.0,
    start: str | pd.Timestamp = "2020-01-01",
    amount_mean: float = 3.5,
    amount_user_sd: float = 0.4,
    amount_sd: float = 0.5,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate `n_users` customers of the sequence process (spec section 2).

    Args:
        n_users: number of customers.
        seed: seed of the numpy Generator; the same seed gives identical frames.
        r, alpha, p_fading, fade_days, rho, q_cart, p_mult: process parameters (SEQUENCE_PARAMS).
        acquisition_days: first purchases T0 are uniform on [0, acquisition_days).
        end_days: the simulation ends here (days since start).
        start: calendar time of day 0.
        amount_mean, amount_user_sd, amount_sd: purchase amount = exp(N(mu_u, amount_sd)),
            mu_u ~ N(amount_mean, amount_user_sd); other events have amount 0.

    Returns:
        events: one row per event with `user_id`, `timestamp` (datetime64[ns]), `event_type`
            (view, cart, purchase, return, complaint), `amount`, sorted by user and time.
        truth: one row per user with `user_id`, `T0_days`, `lam0`, `fading` (bool), `mu`,
            `death_days` (time of the event right after which the user dropped out; inf if alive
            at end_days).
    """
    if n_users <= 0:
        raise ValueError(f"n_users must be positive, got {n_users}")
    if not 0 < acquisition_days <= end_days:
        raise ValueError("need 0 < acquisition_days <= end_days")
    trans, drop, nxt = _tables(p_mult)
    cum_t = np.cumsum(trans, axis=1)
    # Exactly 1 from the last positive entry on: a row summing to 1 - 1e-16 would let a uniform
    # draw just below 1 pick a trailing type of probability 0, which the oracle scores as log 0.
    cum_t /= cum_t[:, -1:]
    rng = np.random.default_rng(seed)

    t0 = rng.uniform(0.0, acquisition_days, size=n_users)
    lam0 = rng.gamma(shape=r, scale=1.0 / alpha, size=n_users)
    fading = rng.random(n_users) < p_fading
    delta = np.where(fading, 1.0 / fade_days, 0.0)
    mu = rng.normal(amount_mean, amount_user_sd, size=n_users)

    state = np.full(n_users, 3 * P)  # (P, mood 0) after the first purchase
    alive = rng.random(n_users) >= _D0
    death = np.where(alive, np.inf, t0)
    users, times, types = [np.arange(n_users)], [t0], [np.full(n_users, P)]
    active, t_last = np.arange(n_users), t0.copy()
    # One round = the next event of every user still emitting, so the loop runs as many
    # times as the busiest user has events, not once per user.
    while active.size:
        live = alive[active]
        # Time change: the next event comes after an Exp(1) amount of integrated rate.
        need = rng.standard_exponential(active.size) / (lam0[active] * np.where(live, 1.0, rho))
        d, base = delta[active], t_last[active]
        t_next = base + need
        fad = d > 0
        level = np.exp(-d[fad] * (base[fad] - t0[active][fad])) - d[fad] * need[fad]
        with np.errstate(invalid="ignore", divide="ignore"):
            t_next[fad] = np.where(level > 0, t0[active][fad] - np.log(level) / d[fad], np.inf)
        u_type, u_drop = rng.random(active.size), rng.random(active.size)
        keep = t_next < end_days
        active, t_next, live = active[keep], t_next[keep], live[keep]
        u_type, u_drop = u_type[keep], u_drop[keep]
        s = state[active]
        x_live = (u_type[:, None] >= cum_t[s]).sum(axis=1)
        x = np.where(live, x_live, np.where(u_type < q_cart, A, V))
        dies = live & (u_drop < drop[s, x])
        state[active] = nxt[s, x]
        alive[active[dies]] = False
        death[active[dies]] = t_next[dies]
        t_last[active] = t_next
        users.append(active)
        times.append(t_next)
        types.append(x)

    user_idx, t, x = np.concatenate(users), np.concatenate(times), np.concatenate(types)
    order = np.lexsort((t, user_idx))
    user_idx, t, x = user_idx[order], t[order], x[order]
    amount = np.where(x == P, np.exp(rng.normal(mu[user_idx], amount_sd)), 0.0)

    width = max(6, len(str(n_users)))
    ids = np.array([f"u{i + 1:0{width}d}" for i in range(n_users)], dtype=object)
    start_ts = pd.Timestamp(start)
    ns = np.round(t * 86_400e9).astype(np.int64)
    events = pd.DataFrame(
        {
            "user_id": ids[user_idx],
            "timestamp": pd.Series(start_ts.value + ns).astype("datetime64[ns]"),
            "event_type": np.asarray(EVENT_TYPES, dtype=object)[x],
            "amount": amount,
        }
    )
    truth = pd.DataFrame(
        {
            "user_id": ids,
            "T0_days": t0,
            "lam0": lam0,
            "fading": fading,
            "mu": mu,
            "death_days": death,
        }
    )
    return events, truth


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
    r: float = SEQUENCE_PARAMS["r"],
    alpha: float = SEQUENCE_PARAMS["alpha"],
    p_fading: float = SEQUENCE_PARAMS["p_fading"],
    fade_days: float = SEQUENCE_PARAMS["fade_days"],
    rho: float = SEQUENCE_PARAMS["rho"],
    q_cart: float = SEQUENCE_PARAMS["q_cart"],
    p_mult=SEQUENCE_PARAMS["p_mult"],
    start: str | pd.Timestamp = "2020-01-01",
    k_max: int = K_MAX,
) -> pd.DataFrame:
    """Exact Bayes-optimal P(no purchase on days C+1..C+H | all events up to day C) (spec section 3).

    Args:
        events: events of the sequence process with `user_id`, `timestamp`, `event_type`.
        cutoff: the day C (included whole); date-like or int days since 1970-01-01.
        horizon_days: H, the label window in days.
        r, alpha, p_fading, fade_days, rho, q_cart, p_mult: process parameters (SEQUENCE_PARAMS).
        start: day 0 of the process (the fading clock needs it only through T0, kept for clarity).
        k_max: truncation of the future event count.

    Returns:
        One row per user with an event on or before day C (= a first purchase): `user_id`,
        `p_churn_oracle`, `p_alive` (posterior probability of being alive at the end of day C),
        `mood` (observable mood after the last event), sorted by user.
    """
    if horizon_days <= 0:
        raise ValueError(f"horizon_days must be positive, got {horizon_days}")
    hs = _history(events, cutoff, start)
    ucode, t, x, t_c, starts, ends = (hs[k] for k in ("ucode", "t", "x", "t_c", "starts", "ends"))
    trans, drop, _ = _tables(p_mult)
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
        big_b = alpha + _mass(t0, t_c, t0, delta)
        log_alive = log_c + log_s[ends] + np.log1p(-d_row[ends]) - (r + n) * np.log(big_b)
        b_dead = (
            alpha + _mass(t0[ucode], t, t0[ucode], delta) + rho * _mass(t, t_c, t0[ucode], delta)
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
        future = _mass(t_c, t_c + horizon_days, t0, delta)
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
    events: pd.DataFrame,
    truth: pd.DataFrame,
    cutoff,
    horizon_days: int,
    fade_days: float = SEQUENCE_PARAMS["fade_days"],
    p_mult=SEQUENCE_PARAMS["p_mult"],
    start: str | pd.Timestamp = "2020-01-01",
    k_max: int = K_MAX,
) -> pd.DataFrame:
    """P(no purchase on days C+1..C+H | hidden alive state, lambda0 and segment at C): an upper bound.

    Returns:
        `user_id`, `p_churn_clairvoyant`, `alive` (bool), for the users `sequence_oracle` scores.
    """
    hs = _history(events, cutoff, start)
    tr = truth.set_index("user_id").loc[hs["users"]]
    alive = tr["death_days"].to_numpy() >= hs["t_c"]
    delta = np.where(tr["fading"].to_numpy(), 1.0 / fade_days, 0.0)
    t0 = tr["T0_days"].to_numpy()
    mean = tr["lam0"].to_numpy() * _mass(hs["t_c"], hs["t_c"] + horizon_days, t0, delta)
    u = _settled(no_purchase_table(p_mult, k_max))
    k = np.arange(len(u), dtype=np.float64)
    pmf = np.exp(k * np.log(mean[:, None]) - mean[:, None] - gammaln(k + 1))
    s = hs["state_after"][hs["ends"]]
    q = (pmf * u[:, s].T).sum(axis=1) + np.clip(1.0 - pmf.sum(axis=1), 0.0, None) * u[-1, s]
    return pd.DataFrame(
        {"user_id": hs["users"], "p_churn_clairvoyant": np.where(alive, q, 1.0), "alive": alive}
    )

"""Synthetic sequence process where event order drives churn (its oracle: `sequence_oracle`).

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


EVENT_TYPES = ("view", "cart", "purchase", "return", "complaint")
V, A, P, R, C = range(5)
N_STATES = 15
START = "2020-01-01"  # day 0 of the process unless a caller says otherwise
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


def process_params(params: dict) -> tuple:
    """(r, alpha, p_fading, fade_days, rho, q_cart, p_mult): SEQUENCE_PARAMS with `params` over it."""
    unknown = sorted(set(params) - set(SEQUENCE_PARAMS))
    if unknown:
        raise TypeError(f"unknown sequence-process parameter(s) {unknown}")
    return tuple({**SEQUENCE_PARAMS, **params}.values())


def state_tables(p_mult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    trans, drop, nxt = state_tables(p_mult)
    u = np.ones((k_max + 1, N_STATES))
    not_p = np.arange(5) != P
    for k in range(1, k_max + 1):
        cont = drop + (1.0 - drop) * u[k - 1][nxt]  # (15, 5)
        u[k] = (trans[:, not_p] * cont[:, not_p]).sum(axis=1)
    return u


def window_mass(a, b, t0, delta):
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
    acquisition_days: float = 360.0,
    end_days: float = 540.0,
    start: str | pd.Timestamp = START,
    amount_mean: float = 3.5,
    amount_user_sd: float = 0.4,
    amount_sd: float = 0.5,
    **params: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate `n_users` customers of the sequence process (spec section 2).

    Args:
        n_users: number of customers.
        seed: seed of the numpy Generator; the same seed gives identical frames.
        params: process parameters, by name, over SEQUENCE_PARAMS.
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
    r, alpha, p_fading, fade_days, rho, q_cart, p_mult = process_params(params)
    if n_users <= 0:
        raise ValueError(f"n_users must be positive, got {n_users}")
    if not 0 < acquisition_days <= end_days:
        raise ValueError("need 0 < acquisition_days <= end_days")
    trans, drop, nxt = state_tables(p_mult)
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

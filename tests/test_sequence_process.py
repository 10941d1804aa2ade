"""Tests of the sequence-process generator, its exact posterior oracle and its data source.

Spec: shared/synthetic-sequence-process.md (DESIGN section 8). The spec's tables are written out
again here instead of imported, so a wrong table in the module cannot agree with itself. The
oracle is the posterior given the observable history, so its residual y - p must average to zero
not only overall but inside every group of users that the history defines (mood, last type,
recency, volume): a coarser or a wrong posterior leaves a residual some feature predicts. That
Monte-Carlo check is shown to have teeth by oracles with a perturbed parameter, which must fail it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special
from sklearn.metrics import roc_auc_score

from seqchurn.simulate.sequence_oracle import sequence_clairvoyant, sequence_oracle
from seqchurn.simulate.sequence_process import EVENT_TYPES, simulate_sequence
from seqchurn.errors import DataError
from seqchurn.train import train

START = pd.Timestamp("2020-01-01")
H = 90
N_USERS = 30_000
SEED = 11
CUTOFFS = (270, 450)  # the spec's C: the history is t < C, the label window [C, C + H)

V, A, P, R, C = range(5)
# Spec section 2: mood-0 type probabilities (rows: last type; columns: V, A, P, R, C).
SPEC_T = np.array(
    [
        [0.60, 0.30, 0.10, 0.00, 0.00],
        [0.45, 0.10, 0.45, 0.00, 0.00],
        [0.45, 0.15, 0.10, 0.15, 0.15],
        [0.50, 0.15, 0.10, 0.00, 0.25],
        [0.35, 0.10, 0.10, 0.35, 0.10],
    ]
)
P_MULT = (1.0, 0.10, 0.02)
R_SHAPE, ALPHA, P_FADING, DELTA_FADING, RHO, Q_CART = 2.0, 12.0, 0.3, 1 / 120, 0.5, 0.3
SPEC_SHARES = {"view": 0.586, "cart": 0.239, "purchase": 0.122, "return": 0.026, "complaint": 0.026}


def spec_type_probs(last: int, mood: int) -> np.ndarray:
    row = SPEC_T[last].copy()
    moved = row[P] * (1 - P_MULT[mood])
    row[P] -= moved
    row[V] += moved
    return row


def spec_mood(mood: int, x: int) -> int:
    if x == C:
        return min(mood + 1, 2)
    if x == P or (x == R and mood >= 1):
        return 0
    return mood


def spec_dropout(prev: int, x: int, m2: int) -> float:
    return {
        V: 0.002 + 0.01 * (prev == A) + 0.08 * m2,
        A: 0.002 + 0.08 * m2,
        P: 0.005,
        R: 0.01 + 0.05 * m2,
        C: 0.15 if m2 == 1 else 0.50,
    }[x]


def spec_mass(a, b, t0, delta):
    """G(a, b) of the spec, elementwise."""
    a, b, t0, delta = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (a, b, t0, delta))
    )
    safe = np.where(delta > 0, delta, 1.0)
    fading = (np.exp(-delta * (a - t0)) - np.exp(-delta * (b - t0))) / safe
    return np.where(delta > 0, fading, b - a)


def day_of(c: int) -> pd.Timestamp:
    """The calendar cutoff day whose history ends at process time c (the day is included whole)."""
    return START + pd.Timedelta(days=c - 1)


# -- shared simulation ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim():
    return simulate_sequence(N_USERS, seed=SEED)


@pytest.fixture(scope="module")
def annotated(sim) -> pd.DataFrame:
    """Events with process time, type code, the observable state before each event (recomputed
    here from the spec, independently of the module) and whether the user was alive to emit it."""
    events, truth = sim
    code = {name: i for i, name in enumerate(EVENT_TYPES)}
    out = pd.DataFrame(
        {
            "user": pd.factorize(events["user_id"])[0],
            "t": ((events["timestamp"] - START) / pd.Timedelta(days=1)).to_numpy(),
            "x": events["event_type"].map(code).to_numpy(),
        }
    )
    # Mood = complaints since the last purchase or refund, capped at 2.
    segment = out["x"].isin([P, R]).astype(int).groupby(out["user"]).cumsum()
    complaints = (out["x"] == C).astype(int).groupby([out["user"], segment]).cumsum()
    out["mood"] = complaints.clip(upper=2).to_numpy()
    first = out["user"].ne(out["user"].shift()).to_numpy()
    out["first"] = first
    out["prev"] = np.where(first, P, out["x"].shift(fill_value=P))
    out["mood_before"] = np.where(first, 0, out["mood"].shift(fill_value=0))
    death = truth.set_index("user_id")["death_days"].reindex(events["user_id"]).to_numpy()
    out["t0"] = truth.set_index("user_id")["T0_days"].reindex(events["user_id"]).to_numpy()
    out["lam0"] = truth.set_index("user_id")["lam0"].reindex(events["user_id"]).to_numpy()
    out["delta"] = np.where(
        truth.set_index("user_id")["fading"].reindex(events["user_id"]), DELTA_FADING, 0.0
    )
    out["death"] = death
    # Timestamps are rounded to the nanosecond: match the death time within 1e-9 days.
    out["alive"] = out["t"] <= death + 1e-9
    out["dies"] = np.abs(out["t"] - death) < 1e-9
    return out


@pytest.fixture(scope="module")
def scored(sim, annotated) -> dict:
    """Per cutoff: the oracle and clairvoyant scores, the realised label, the true alive state and
    groups of users defined by the observable history."""
    events, truth = sim
    out = {}
    for c in CUTOFFS:
        frame = sequence_oracle(events, day_of(c), H, start=START)
        clair = sequence_clairvoyant(events, truth, day_of(c), H, start=START)
        ann = annotated
        bought = ann.loc[(ann["x"] == P) & (ann["t"] >= c) & (ann["t"] < c + H), "user"].unique()
        seen = ann[ann["t"] < c]
        per_user = seen.groupby("user").agg(
            n=("x", "size"), last=("x", "last"), t_last=("t", "last"), mood=("mood", "last")
        )
        per_user["t_buy"] = seen[seen["x"] == P].groupby("user")["t"].max()
        users = pd.factorize(events["user_id"])[1]
        per_user.index = users[per_user.index]
        per_user = per_user.reindex(frame["user_id"])
        buyer_ids = set(users[bought])
        frame["y"] = (~frame["user_id"].isin(buyer_ids)).astype(int).to_numpy()
        frame["alive"] = (
            truth.set_index("user_id")["death_days"].reindex(frame["user_id"]).to_numpy() >= c
        ).astype(int)
        frame["clair_alive"] = clair["alive"].astype(int).to_numpy()
        frame["mood_spec"] = per_user["mood"].to_numpy()
        frame["p_clair"] = clair["p_churn_clairvoyant"].to_numpy()
        frame["recency_purchase"] = c - per_user["t_buy"].to_numpy()
        p = frame["p_churn_oracle"].to_numpy()
        frame["g_decile"] = np.searchsorted(np.quantile(p, np.linspace(0, 1, 11)[1:-1]), p)
        frame["g_mood"] = frame["mood"]
        frame["g_last"] = per_user["last"].to_numpy()
        frame["g_recency"] = np.digitize(
            c - per_user["t_last"].to_numpy(), [1, 3, 7, 14, 30, 60, 120]
        )
        frame["g_volume"] = np.digitize(per_user["n"].to_numpy(), [2, 5, 10, 20, 40, 80])
        out[c] = frame
    return out


GROUPS = ("g_decile", "g_mood", "g_last", "g_recency", "g_volume")


def residual_z(p: np.ndarray, y: np.ndarray, frame: pd.DataFrame) -> np.ndarray:
    """z = (sum y - sum p) / sqrt(sum p(1-p)) in every observable group with enough variance.

    For the true posterior each z is about N(0, 1), whatever the grouping, since the groups are
    functions of the history the posterior conditions on.
    """
    zs = []
    for g in GROUPS:
        for value in np.unique(frame[g]):
            m = (frame[g] == value).to_numpy()
            var = float(np.sum(p[m] * (1 - p[m])))
            if var >= 5:  # a handful of near-certain users says nothing either way
                zs.append((y[m].sum() - p[m].sum()) / math.sqrt(var))
    return np.asarray(zs)


# -- (a) generator -------------------------------------------------------------------------
def test_same_seed_same_frames_other_seed_differs():
    ev1, tr1 = simulate_sequence(300, seed=3)
    ev2, tr2 = simulate_sequence(300, seed=3)
    pd.testing.assert_frame_equal(ev1, ev2)
    pd.testing.assert_frame_equal(tr1, tr2)
    ev3, _ = simulate_sequence(300, seed=4)
    assert not ev1["timestamp"].equals(ev3["timestamp"])


def test_contract_and_spec_ranges(sim, annotated):
    events, truth = sim
    assert list(events.columns) == ["user_id", "timestamp", "event_type", "amount"]
    assert events["timestamp"].dtype == np.dtype("datetime64[ns]")
    assert set(events["event_type"]) == set(EVENT_TYPES)
    # Sorted by user, then time (ids are zero-padded, so their string order is the user order).
    ids = events["user_id"].to_numpy()
    same_user = ids[1:] == ids[:-1]
    assert pd.Index(pd.unique(ids)).is_monotonic_increasing
    assert (np.diff(annotated["t"].to_numpy())[same_user] >= 0).all()
    assert list(truth.columns) == ["user_id", "T0_days", "lam0", "fading", "mu", "death_days"]
    assert len(truth) == N_USERS and set(events["user_id"]) == set(truth["user_id"])
    t0 = truth["T0_days"].to_numpy()
    assert (
        t0.min() >= 0
        and t0.max() < 360
        and abs(t0.mean() - 180) < 4 * 360 / math.sqrt(12 * N_USERS)
    )
    t = annotated["t"].to_numpy()
    assert t.max() < 540
    # Every user starts with a purchase at T0, and nothing comes before it.
    firsts = annotated[annotated["first"]]
    assert (firsts["x"] == P).all()
    np.testing.assert_allclose(firsts["t"].to_numpy(), firsts["t0"].to_numpy(), atol=1e-9)
    # Amounts only on purchases, log-normal around exp(3.5).
    buy = (annotated["x"] == P).to_numpy()
    amount = events["amount"].to_numpy()
    assert (amount[buy] > 0).all() and (amount[~buy] == 0).all()
    assert abs(np.log(amount[buy]).mean() - 3.5) < 0.05


def test_window_arguments_are_respected():
    events, truth = simulate_sequence(
        500, seed=2, acquisition_days=30, end_days=100, start="2021-05-01"
    )
    t = (events["timestamp"] - pd.Timestamp("2021-05-01")) / pd.Timedelta(days=1)
    assert truth["T0_days"].max() < 30 and t.min() >= 0 and t.max() < 100
    with pytest.raises(ValueError):
        simulate_sequence(0)
    with pytest.raises(ValueError):
        simulate_sequence(10, acquisition_days=600, end_days=540)


def test_population_and_volume_match_spec(sim):
    events, truth = sim
    lam0 = truth["lam0"].to_numpy()
    mean, sd = R_SHAPE / ALPHA, math.sqrt(R_SHAPE) / ALPHA
    assert abs(lam0.mean() - mean) < 4 * sd / math.sqrt(N_USERS)
    share = truth["fading"].mean()
    assert abs(share - P_FADING) < 4 * math.sqrt(P_FADING * (1 - P_FADING) / N_USERS)
    # The spec's measured volume (one 20k-user sample): median 28, mean 36, 90th percentile 76.
    per_user = events.groupby("user_id").size()
    assert abs(per_user.median() - 28) <= 2 and abs(per_user.mean() - 36) < 1.5
    assert abs(per_user.quantile(0.9) - 76) <= 4
    shares = events["event_type"].value_counts(normalize=True)
    for name, expected in SPEC_SHARES.items():
        assert abs(shares[name] - expected) < 0.05 * expected + 0.002, (name, shares[name])


def test_alive_event_rate_and_lapsed_rate(annotated):
    """Counts against the integrated rate: N(tau) - Lambda(tau) is a martingale and death is a
    stopping time, so the expected count up to death is the integrated rate up to death, and
    its variance is that same number (Poisson compensator)."""
    ann = annotated
    users = ann[ann["first"]]
    t0, lam0, delta, death = (users[k].to_numpy() for k in ("t0", "lam0", "delta", "death"))
    stop = np.minimum(death, 540.0)
    expected_alive = float(np.sum(lam0 * spec_mass(t0, stop, t0, delta)))
    n_alive = int((ann["alive"] & ~ann["first"]).sum())
    assert abs(n_alive - expected_alive) < 4 * math.sqrt(expected_alive), (n_alive, expected_alive)
    dead = death < 540
    expected_lapsed = float(
        np.sum(RHO * lam0[dead] * spec_mass(death[dead], 540.0, t0[dead], delta[dead]))
    )
    lapsed = ann[~ann["alive"]]
    assert abs(len(lapsed) - expected_lapsed) < 4 * math.sqrt(expected_lapsed), (
        len(lapsed),
        expected_lapsed,
    )
    # Lapsed users only browse: views, and carts with probability q_A.
    assert lapsed["x"].isin([V, A]).all()
    n = len(lapsed)
    assert abs((lapsed["x"] == A).mean() - Q_CART) < 4 * math.sqrt(Q_CART * (1 - Q_CART) / n)


def test_type_choice_follows_spec_table(annotated):
    ann = annotated[annotated["alive"] & ~annotated["first"]]
    counts = pd.crosstab([ann["prev"], ann["mood_before"]], ann["x"]).reindex(
        columns=range(5), fill_value=0
    )
    checked = 0
    for (prev, mood), row in counts.iterrows():
        probs = spec_type_probs(prev, mood)
        n = row.sum()
        obs = row.to_numpy()
        # A type of probability 0 never occurs; the others within 5 binomial SE.
        assert (obs[probs == 0] == 0).all(), (prev, mood, obs)
        for x in np.flatnonzero(probs > 0):
            exp = n * probs[x]
            if exp >= 25:
                assert abs(obs[x] - exp) < 5 * math.sqrt(exp * (1 - probs[x])), (
                    prev,
                    mood,
                    x,
                    obs[x],
                    exp,
                )
                checked += 1
    assert checked >= 30  # 11 of the 15 states are reachable (R and P reset the mood)


def test_dropout_follows_spec(annotated):
    ann = annotated[annotated["alive"]].copy()
    ann["m2"] = ann["mood"]
    checked = 0
    for (prev, x, m2, first), grp in ann.groupby(["prev", "x", "m2", "first"]):
        d = 0.005 if first else spec_dropout(prev, x, m2)
        exp = len(grp) * d
        if exp >= 10:
            obs = int(grp["dies"].sum())
            assert abs(obs - exp) < 5 * math.sqrt(exp * (1 - d)), (prev, x, m2, first, obs, exp)
            checked += 1
    assert checked >= 15
    # A user dies at most once, right after an event it emitted while alive.
    assert annotated.groupby("user")["dies"].sum().max() <= 1


def test_mood_depends_on_the_order_of_complaints_and_refunds():
    rows = {
        "p_c_r": "PCR",  # the refund resolves the complaint
        "p_r_c": "PRC",  # the complaint comes after the refund: unresolved
        "p_c_c_c": "PCCC",  # capped at 2
        "p_c_p": "PCP",  # a purchase resets
        "p_c_v_a": "PCVA",  # browsing keeps the mood
    }
    letters = dict(zip("VAPRC", EVENT_TYPES))
    frames = []
    for user, seq in rows.items():
        stamps = START + pd.to_timedelta(np.arange(len(seq)) * 3 + 10, unit="D")
        frames.append(
            pd.DataFrame(
                {"user_id": user, "timestamp": stamps, "event_type": [letters[s] for s in seq]}
            )
        )
    events = pd.concat(frames, ignore_index=True)
    out = sequence_oracle(events, "2020-03-01", H, start=START).set_index("user_id")
    assert out["mood"].to_dict() == {"p_c_r": 0, "p_r_c": 1, "p_c_c_c": 2, "p_c_p": 0, "p_c_v_a": 1}
    # Same type counts, other order: the unresolved complaint makes churn more likely.
    assert out.loc["p_r_c", "p_churn_oracle"] > out.loc["p_c_r", "p_churn_oracle"] + 0.1


@pytest.mark.parametrize("cutoff", CUTOFFS)
def test_oracle_state_matches_a_recount_from_the_spec(scored, cutoff):
    frame = scored[cutoff]
    assert (frame["mood"] == frame["mood_spec"]).all()
    assert (frame["clair_alive"] == frame["alive"]).all()


def test_oracle_refuses_histories_outside_the_process():
    base = {"user_id": ["a", "a"], "timestamp": pd.to_datetime(["2020-01-05", "2020-01-06"])}
    with pytest.raises(DataError, match="first event"):
        sequence_oracle(pd.DataFrame({**base, "event_type": ["view", "purchase"]}), "2020-02-01", H)
    with pytest.raises(DataError, match="not part of the sequence process"):
        sequence_oracle(
            pd.DataFrame({**base, "event_type": ["purchase", "refund"]}), "2020-02-01", H
        )
    impossible = {
        "user_id": ["a"] * 3,
        "timestamp": pd.to_datetime(["2020-01-05", "2020-01-06", "2020-01-07"]),
    }
    with pytest.raises(DataError, match="complaint right after a view"):
        sequence_oracle(
            pd.DataFrame({**impossible, "event_type": ["purchase", "view", "complaint"]}),
            "2020-02-01",
            H,
        )


# -- (b) the oracle against a direct computation and against simulation ---------------------
def _naive_u(k_max: int) -> dict:
    """u[k][(last, mood)] by the spec's recursion, with dictionaries."""
    states = [(last, m) for last in range(5) for m in range(3)]
    u = [{s: 1.0 for s in states}]
    for _ in range(k_max):
        nxt = {}
        for last, m in states:
            probs = spec_type_probs(last, m)
            total = 0.0
            for x in (V, A, R, C):
                m2 = spec_mood(m, x)
                d = spec_dropout(last, x, m2)
                total += probs[x] * (d + (1 - d) * u[-1][(x, m2)])
            nxt[(last, m)] = total
        u.append(nxt)
    return u


def _naive_oracle(times: list[float], seq: str, t_c: float, u: list) -> tuple[float, float]:
    """P(churn) and P(alive) with the gamma integral done by quadrature and the future count as a
    Poisson mixture over lambda0: no conjugacy, no negative binomial, no log-space tricks."""
    xs = ["VAPRC".index(s) for s in seq]
    t0, n = times[0], len(times) - 1
    pis, drops, moods = [1.0], [0.005], [0]
    for i in range(1, n + 1):
        m2 = spec_mood(moods[-1], xs[i])
        pis.append(spec_type_probs(xs[i - 1], moods[-1])[xs[i]])
        drops.append(spec_dropout(xs[i - 1], xs[i], m2))
        moods.append(m2)
    state = (xs[-1], moods[-1])
    k = np.arange(len(u))
    u_state = np.array([row[state] for row in u])
    num = den = alive_mass = 0.0
    for prior, delta in ((1 - P_FADING, 0.0), (P_FADING, DELTA_FADING)):

        def mass(a, b):
            return float(spec_mass(a, b, t0, delta))

        g = math.prod(math.exp(-delta * (t - t0)) for t in times[1:])

        def prior_pdf(lam):  # Gamma(r, alpha), written out: scipy's pdf costs more than the rest
            return (
                ALPHA**R_SHAPE / math.gamma(R_SHAPE) * lam ** (R_SHAPE - 1) * math.exp(-ALPHA * lam)
            )

        def integral(f, exposure):
            # Every integrand is lam^(r+n-1) exp(-lam (alpha + exposure)) times bounded factors:
            # integrate over its bulk, split at its mode, so quadrature cannot miss the peak.
            shape, rate = R_SHAPE + n, ALPHA + exposure
            mode, sd = (shape - 1) / rate, math.sqrt(shape) / rate
            hi = mode + 60 * sd
            return integrate.quad(
                f, 0, hi, points=[mode, mode + sd], epsabs=0, epsrel=1e-11, limit=400
            )[0]

        s_alive = math.prod(pis) * math.prod(1 - d for d in drops)
        exposure_alive = mass(t0, t_c)

        def alive(lam):
            return prior * prior_pdf(lam) * lam**n * g * math.exp(-lam * exposure_alive) * s_alive

        future = mass(t_c, t_c + H)
        log_k_fact = special.gammaln(k + 1.0)

        def no_buy(lam):
            return float(
                np.sum(np.exp(k * math.log(lam * future) - lam * future - log_k_fact) * u_state)
            )

        w_alive = integral(alive, exposure_alive)
        den += w_alive
        alive_mass += w_alive
        num += integral(lambda lam: alive(lam) * no_buy(lam), exposure_alive)
        for j in range(n + 1):
            if any(x not in (V, A) for x in xs[j + 1 :]):
                continue  # a dead user never buys, returns or complains
            q = math.prod(Q_CART if x == A else 1 - Q_CART for x in xs[j + 1 :])
            s_dead = math.prod(pis[: j + 1]) * math.prod(1 - d for d in drops[:j]) * drops[j] * q
            exposure = mass(t0, times[j]) + RHO * mass(times[j], t_c)
            w = integral(
                lambda lam: (
                    prior
                    * prior_pdf(lam)
                    * lam**n
                    * g
                    * RHO ** (n - j)
                    * math.exp(-lam * exposure)
                    * s_dead
                ),
                exposure,
            )
            num += w
            den += w
    return num / den, alive_mass / den


NAIVE_CASES = {
    "only_first": ([100.3], "P"),
    "browsing": ([20.2, 25.0, 31.7, 60.1], "PVAV"),
    "complaint": ([50.0, 52.5, 53.0, 140.2], "PCVV"),
    "resolved": ([5.5, 30.0, 31.0, 35.0, 180.0, 181.0], "PCRVAA"),
    "escalated": ([200.0, 201.0, 210.0, 215.0, 220.5, 221.0, 290.0], "PRCCVVA"),
    "cart_left": ([10.0, 11.0, 11.5, 300.0], "PVAV"),
    "buyer": ([80.0, 90.0, 95.0, 96.0, 130.0, 131.0, 300.0, 301.0], "PVAPVAPV"),
}


def test_oracle_matches_direct_numerical_integration():
    u = _naive_u(350)  # u[k] has settled to 1e-15 by k = 300
    frames, expected = [], {}
    for user, (times, seq) in NAIVE_CASES.items():
        stamps = START + pd.to_timedelta(np.asarray(times), unit="D")
        frames.append(
            pd.DataFrame(
                {
                    "user_id": user,
                    "timestamp": stamps,
                    "event_type": [EVENT_TYPES["VAPRC".index(s)] for s in seq],
                }
            )
        )
        expected[user] = _naive_oracle(times, seq, 360.0, u)
    out = sequence_oracle(
        pd.concat(frames, ignore_index=True), day_of(360), H, start=START
    ).set_index("user_id")
    for user, (p_churn, p_alive) in expected.items():
        assert out.loc[user, "p_churn_oracle"] == pytest.approx(p_churn, rel=1e-9), user
        assert out.loc[user, "p_alive"] == pytest.approx(p_alive, rel=1e-9), user


@pytest.mark.parametrize("cutoff", CUTOFFS)
def test_oracle_is_calibrated_in_every_observable_group(sim, scored, cutoff):
    frame = scored[cutoff]
    # Everyone acquired before C is scored, and no one else.
    assert len(frame) == (sim[1]["T0_days"] < cutoff).sum()
    for target, score in (("y", "p_churn_oracle"), ("alive", "p_alive")):
        p, y = frame[score].to_numpy(), frame[target].to_numpy()
        z = residual_z(p, y, frame)
        overall = (y.sum() - p.sum()) / math.sqrt(np.sum(p * (1 - p)))
        # About 30 groups: each z ~ N(0, 1), so |z| < 4.5 and a mean z^2 below 2 hold for the
        # true posterior with room to spare (the mean of 30 squares has sd about 0.3).
        assert abs(overall) < 3.5, (target, overall)
        assert len(z) >= 25 and np.abs(z).max() < 4.5 and np.mean(z**2) < 2.0, (
            target,
            np.round(z, 1),
        )


@pytest.mark.parametrize(
    "perturbed",
    [
        {"q_cart": 0.5},  # the spec's pitfall: lapsed types not modelled (q(V) = q(A) cancel out)
        {"p_mult": (1.0, 0.2, 0.02)},  # a milder mood effect on purchases
        {"rho": 0.35},  # lapsed users browse less than they do
    ],
    ids=["lapsed_types", "mood_effect", "lapsed_rate"],
)
def test_calibration_check_rejects_a_perturbed_oracle(sim, scored, perturbed):
    events, _ = sim
    frame = scored[450]
    out = sequence_oracle(events, day_of(450), H, start=START, **perturbed)
    worst = 0.0
    for target, score in (("y", "p_churn_oracle"), ("alive", "p_alive")):
        z = residual_z(out[score].to_numpy(), frame[target].to_numpy(), frame)
        worst = max(worst, float(np.mean(z**2)))
    assert worst > 3.0, worst


# -- (c) separation ------------------------------------------------------------------------
def test_oracle_auroc_matches_spec(scored):
    frame = scored[450]
    y = frame["y"].to_numpy()
    auc = roc_auc_score(y, frame["p_churn_oracle"])
    # Spec: 0.9320 on 6,000 users (bootstrap SE about 0.0033); here 30,000 users (SE about
    # 0.0015): 3 SE of the difference, about 0.011. Several seeds of this generator gave 0.937.
    assert abs(auc - 0.932) < 0.011, auc
    assert abs(y.mean() - 0.771) < 0.015  # the spec's test churn rate
    clair = roc_auc_score(y, frame["p_clair"])
    assert auc < clair and abs(clair - 0.961) < 0.01, clair
    # Days since the last purchase alone (spec 0.825): the gap that sequence models must close.
    recency = roc_auc_score(y, frame["recency_purchase"])
    assert abs(recency - 0.825) < 0.02 and auc - recency > 0.09, recency


# -- the data source -----------------------------------------------------------------------
N_SMALL = 300
# One small training batch keeps the LSTM step, the bulk of this test, well under a second.
SMALL = [
    "data=synthetic_sequence",
    f"data.synthetic.n_users={N_SMALL}",
    "data.batch_size=64",
    "logger=csv",
    "trainer.enable_progress_bar=false",
]


def test_train_runs_on_synthetic_sequence(make_cfg):
    metrics, objects = train(make_cfg(["model=lstm", "debug=fdr", *SMALL]))
    assert {"test/auroc", "test/auroc_oracle", "test/oracle_ratio"} <= set(metrics)
    dm = objects["datamodule"]
    test = dm.snapshots["test"]
    # The oracle lines up with the test rows, and both use the spec's window: the cutoff date
    # start + 449 days ends the history at C = 450, labels count purchases in [450, 540).
    assert dm.oracle["user_id"].tolist() == test["user_id"].tolist()
    assert dm.oracle["p_churn_oracle"].between(0, 1).all()
    assert str(np.datetime64(int(test["cutoff"].iloc[0]), "D")) == str(day_of(450).date())
    events, _ = simulate_sequence(N_SMALL, seed=0)
    t = (events["timestamp"] - START) / pd.Timedelta(days=1)
    buyers = set(
        events.loc[(events["event_type"] == "purchase") & (t >= 450) & (t < 540), "user_id"]
    )
    assert (test["y"].to_numpy() == (~test["user_id"].isin(buyers)).to_numpy()).all()
    assert len(test) == round(0.3 * N_SMALL)  # every held-out user was acquired before C
    assert dm.bin_edges == [0, 30, 60, 90]

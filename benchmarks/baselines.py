"""The reference methods of the benchmark, each fitted without test-period data."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from seqchurn.baselines.bgnbd import BGNBDBaseline
from seqchurn.baselines.rfm import LogisticRFM, recency_score
from seqchurn.baselines.survival import CoxBaseline, KaplanMeierBaseline
from seqchurn.baselines.trees import SummaryBaseline
from seqchurn.data.labels import make_snapshots
from seqchurn.survival_metrics import restricted_mean

SUMMARY_KINDS = ("logreg", "rf", "lgbm", "lgbm_untuned")


def run_baselines(dm, seed: int) -> dict[str, dict]:
    """Every baseline scored on the datamodule's test snapshot rows.

    Args:
        dm: a set-up ChurnDataModule (events, snapshots, train_cutoffs, test_cutoff).
        seed: the seed of the tree baselines.

    Returns:
        method -> {"p": (N,) p_churn, "later": (N,) higher = later churn, "seconds"}, in the
        row order of dm.snapshots["test"]; the time-to-churn methods (BG/NBD, Cox, Kaplan-Meier)
        add "surv": (N, K) P(tau > edge) at the head's bin edges dm.bin_edges.
    """
    events, test, train = dm.events, dm.snapshots["test"], dm.snapshots["train"]
    edges = list(dm.bin_edges)
    horizon, cutoff = int(dm.hparams.horizon_days), int(dm.test_cutoff)
    activity = dm.hparams.activity_event_types
    known_users = pd.concat(
        [dm.snapshots["train"]["user_id"], dm.snapshots["val"]["user_id"]]
    ).unique()
    # One snapshot at the last training cutoff, its labels ending at the test cutoff.
    single = make_snapshots(
        events,
        cutoffs=[max(dm.train_cutoffs)],
        horizon=horizon,
        obs_end=cutoff,
        bin_edges=[0],
        activity_event_types=activity,
    )
    single = single[single["user_id"].isin(known_users)].reset_index(drop=True)
    out: dict[str, dict] = {}

    started = time.perf_counter()
    p = LogisticRFM(activity).fit(events, single).predict_proba(events, test)
    out["logistic_rfm"] = {"p": p, "later": -p, "seconds": time.perf_counter() - started}

    # Recency ranks by itself; a one-feature logistic fit on the same snapshot makes it a
    # probability.
    started = time.perf_counter()
    rec_train = recency_score(events, single, activity)[:, None]
    rec_test = recency_score(events, test, activity)[:, None]
    calib = LogisticRegression().fit(np.log1p(rec_train), single["y"].to_numpy())
    p = calib.predict_proba(np.log1p(rec_test))[:, 1]
    out["recency"] = {"p": p, "later": -rec_test[:, 0], "seconds": time.perf_counter() - started}

    started = time.perf_counter()
    bg = BGNBDBaseline(activity).fit(events[events["user_id"].isin(known_users)], cutoff)
    scored = bg.predict(events, cutoff, horizon).set_index("user_id")["p_churn"]
    p = scored.reindex(test["user_id"]).to_numpy()
    users, surv = bg.predict_survival(events, cutoff, horizon, edges)
    surv = pd.DataFrame(surv, index=users).reindex(test["user_id"]).to_numpy()
    out["bgnbd"] = {"p": p, "later": -p, "surv": surv, "seconds": time.perf_counter() - started}

    # Time to churn from the stacked training snapshots, whose labels end by the test cutoff.
    started = time.perf_counter()
    surv = (
        CoxBaseline(edges, activity, horizon)
        .fit(events, train, cutoff)
        .predict_survival(events, test)
    )
    out["cox"] = _from_curve(surv, edges, started)
    started = time.perf_counter()
    surv = KaplanMeierBaseline(horizon).fit(train, cutoff).predict_survival(len(test), edges)
    out["km"] = _from_curve(surv, edges, started)

    for kind in SUMMARY_KINDS:
        started = time.perf_counter()
        model = SummaryBaseline(
            kind=kind, activity_event_types=activity, horizon_days=horizon, seed=seed
        )
        model.fit(events, train, dm.snapshots["val"], test_cutoff=cutoff)
        p = model.predict_proba(events, test)
        out[f"{kind}_summary"] = {"p": p, "later": -p, "seconds": time.perf_counter() - started}

    out["lgbm_aggregates"] = run_baseline(dm, "lgbm_aggregates", seed)
    return out


def run_baseline(dm, name: str, seed: int) -> dict:
    """One baseline alone (the studies' arms): today the field's reference, LightGBM on per
    type x window aggregates, tuned on validation like lgbm_summary."""
    if name != "lgbm_aggregates":
        raise ValueError(f"no single-baseline runner for {name!r}")
    events, train, test = dm.events, dm.snapshots["train"], dm.snapshots["test"]
    horizon, cutoff = int(dm.hparams.horizon_days), int(dm.test_cutoff)
    activity = dm.hparams.activity_event_types
    started = time.perf_counter()
    model = SummaryBaseline(
        kind="lgbm",
        feature_set="aggregates",
        activity_event_types=activity,
        horizon_days=horizon,
        seed=seed,
    )
    model.fit(events, train, dm.snapshots["val"], test_cutoff=cutoff)
    p = model.predict_proba(events, test)
    return {"p": p, "later": -p, "seconds": time.perf_counter() - started}


def _from_curve(surv: np.ndarray, edges: list, started: float) -> dict:
    """A survival baseline's entry: p_churn = 1 - S(0), ranked later by the area under S."""
    later = restricted_mean(surv, np.asarray(edges, np.float64))
    seconds = time.perf_counter() - started
    return {"p": 1.0 - surv[:, 0], "later": later, "surv": surv, "seconds": seconds}

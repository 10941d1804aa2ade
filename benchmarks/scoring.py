"""One benchmark run scored: a composed config trained, its test predictions on the snapshot rows."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from seqchurn.data.labels import to_date
from seqchurn.metrics import UndefinedMetricWarning, score_table
from seqchurn.survival_metrics import SURVIVAL_COLUMNS, Censoring, ibs_rows, survival_scores
from seqchurn.train import train

# Siblings in benchmarks/: Python puts a script's own folder first on its path.
from baselines import run_baselines
from protocol import compose_cfg, merge_overrides

log = logging.getLogger("seqchurn.benchmark")


def run_model(overrides: list[str], work: Path) -> tuple[dict, object, dict]:
    """Train one composed config; its test predictions aligned with the test snapshot rows.

    Returns:
        ({"p", "later", "surv"} arrays, the datamodule, train()'s metrics); surv is (N, K)
        P(tau > edge) at the model's bin edges.
    """
    out = Path(tempfile.mkdtemp(dir=work))
    metrics, objects = train(compose_cfg(overrides, out))
    pred = objects["test_predictions"]
    n = len(objects["datamodule"].snapshots["test"])
    p = np.full(n, np.nan)
    tau_mean = np.full(n, np.nan)
    p[pred["index"]] = pred["p_churn"]
    tau_mean[pred["index"]] = pred["tau_mean"]
    surv = np.full((n, pred["surv"].shape[1]), np.nan)
    surv[pred["index"]] = pred["surv"]
    edges = objects["model"].hparams.bin_edges
    shutil.rmtree(out, ignore_errors=True)
    later = tau_mean if len(edges) > 1 else -p
    # calibration in the large where the recalibration saw it: the latest training cutoff
    cal = objects["model"].calibration or {}
    pred = {"p": p, "later": later, "surv": surv}
    pred["val_calib_large"] = cal.get("calib_large_after", float("nan"))
    return pred, objects["datamodule"], metrics


def score_row(test: pd.DataFrame, name: str, pred: dict, edges=None) -> dict:
    """score_table's row of one method's predictions on a test snapshot.

    A method with a survival curve ("surv" at `edges`) adds the survival metrics and keeps
    each row's share of the integrated Brier score in pred["ibs_rows"] for the bootstrap;
    the others get NaN there.
    """
    tau, observed = test["tau"].to_numpy(), test["observed"].to_numpy()
    table = score_table(
        test["y"].to_numpy(),
        {name: pred["p"]},
        tau=tau,
        observed=observed,
        later={name: pred["later"]},
    )
    row = table.iloc[0].to_dict()
    surv = pred.get("surv")
    row.update(dict.fromkeys(SURVIVAL_COLUMNS, np.nan))
    if surv is not None and edges is not None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UndefinedMetricWarning)
            row.update(survival_scores(surv, edges, tau, observed))
        if caught:  # one line per method, named
            log.warning("%s: %s", name, "; ".join(str(w.message) for w in caught))
        pred["ibs_rows"], _ = ibs_rows(surv, edges, tau, observed)
    return row


def run_dataset(ds: dict, protocol: dict, models: list[str], work: Path) -> tuple[list, dict]:
    """Every model x seed and every baseline on one dataset of the protocol.

    Returns:
        (rows of the results table, the dataset's scores: group, y, tau, observed, users,
        preds, events, test_cutoff and the datamodule's facts for the README).
    """
    preds: dict[str, list[dict]] = {}
    dm = None
    seeds = protocol["seeds"]
    for model in models:
        for seed in seeds:
            t0 = time.perf_counter()
            overrides = merge_overrides(
                ds["overrides"], [f"model={model}", f"seed={seed}"], protocol["overrides"]
            )
            pred, dm, metrics = run_model(overrides, work)
            pred.update(
                seconds=time.perf_counter() - t0,
                fit_s=metrics.get("time/fit_s"),
                test_s=metrics.get("time/test_s"),
            )
            preds.setdefault(model, []).append(pred)
            log.info("%s %s seed %d: %.0f s", ds["name"], model, seed, pred["seconds"])
    for name, pred in run_baselines(dm, seeds[0]).items():
        preds[name] = [pred]
    if dm.oracle is not None:
        p = dm.oracle["p_churn_oracle"].to_numpy()
        preds["oracle"] = [{"p": p, "later": -p, "seconds": 0.0}]
    test = dm.snapshots["test"]
    edges = [float(e) for e in dm.bin_edges]
    rows = []
    for method, seed_preds in preds.items():
        for i, pred in enumerate(seed_preds):
            row = score_row(test, name=method, pred=pred, edges=edges)
            row.update(
                dataset=ds["name"],
                group=ds["group"],
                method=method,
                seed=seeds[i] if method in models else None,
                seconds=pred["seconds"],
                fit_s=pred.get("fit_s"),
                test_s=pred.get("test_s"),
            )
            rows.append(row)
    y = test["y"].to_numpy()
    scores = {
        "group": ds["group"],
        "y": y,
        "tau": test["tau"].to_numpy(),
        "observed": test["observed"].to_numpy(),
        "users": test["user_id"].to_numpy(dtype=object),
        "preds": preds,
        "events": dm.events,
        "test_cutoff": int(dm.test_cutoff),
        "facts": {
            "dataset": ds["name"],
            "n_test": int(len(y)),
            "churn_rate": float(y.mean()),
            "test_cutoff": to_date(int(dm.test_cutoff)),
            # the integrated Brier score covers the finite bins this snapshot observes
            "ibs_days": min(edges[-1], Censoring(test["tau"], test["observed"]).max_time),
        },
    }
    return rows, scores

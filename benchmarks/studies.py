"""The benchmark's studies: arms of one question scored on the same test snapshots, paired.

protocol.yaml lists each study: its datasets, seeds (an arm may set its own), arms (Hydra
overrides of a model run, or a baseline fitted on the datamodule those overrides build) and
the pairs to compare. Every arm
of a dataset scores the same test rows (the test users and cutoff never depend on an arm), so
the customer-level paired bootstrap applies, the seeds of each arm averaged as in the main table.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from seqchurn.bootstrap import paired_bootstrap
from seqchurn.train import instantiate

# Siblings in benchmarks/: Python puts a script's own folder first on its path.
from baselines import run_baseline
from compare import comparable, metric_input
from protocol import compose_cfg, merge_overrides
from report import interval_cell, mean_std_cell, table
from scoring import run_model, score_row

log = logging.getLogger("seqchurn.benchmark")

_SHOWN = (
    ("auroc", "AUROC"),
    ("brier", "Brier"),
    ("ece", "ECE"),
    ("calib_large", "mean p − rate"),
    ("val_calib_large", "mean p − rate, validation"),
    ("ibs", "IBS"),
)


def _baseline_arm(overrides: list[str], kind: str, seed: int, work: Path) -> tuple[dict, object]:
    cfg = compose_cfg(merge_overrides(overrides, [f"seed={seed}"]), work)
    dm = instantiate(cfg.data)
    dm.setup()
    started = time.perf_counter()
    pred = run_baseline(dm, kind, seed)
    pred["seconds"] = time.perf_counter() - started
    return pred, dm


def run_study(spec: dict, datasets: dict, protocol: dict, work: Path) -> dict:
    """Every arm x seed of one study on each of its datasets.

    Args:
        spec: the study of protocol.yaml (title, datasets, seeds, arms, compare).
        datasets: dataset name -> the protocol's dataset (overrides, group).
        protocol: the loaded protocol (its `overrides` apply to every run).

    Returns:
        {"title", "rows": scored rows (dataset, arm, seed, metrics, seconds), "scores":
        dataset -> {y, tau, observed, users, preds: arm -> [pred per seed]}, "compare"}.
    """
    rows, scores = [], {}
    for name in spec["datasets"]:
        ds = datasets[name]
        preds: dict[str, list[dict]] = {}
        test = None
        for arm, arm_spec in spec["arms"].items():
            for seed in arm_spec.get("seeds", spec["seeds"]):
                overrides = merge_overrides(
                    ds["overrides"], arm_spec.get("overrides", []), protocol["overrides"]
                )
                t0 = time.perf_counter()
                if "baseline" in arm_spec:
                    pred, dm = _baseline_arm(overrides, arm_spec["baseline"], seed, work)
                else:
                    pred, dm, _ = run_model(merge_overrides(overrides, [f"seed={seed}"]), work)
                    pred["seconds"] = time.perf_counter() - t0
                arm_test = dm.snapshots["test"]
                if test is None:
                    test = arm_test
                elif not test["user_id"].equals(arm_test["user_id"]):
                    raise RuntimeError(f"{name}: arm {arm!r} scored other test rows")
                edges = [float(e) for e in dm.bin_edges] if "surv" in pred else None
                row = score_row(test, name=arm, pred=pred, edges=edges)
                row.update(dataset=name, arm=arm, seed=seed, seconds=pred["seconds"])
                row["val_calib_large"] = pred.get("val_calib_large", np.nan)
                rows.append(row)
                preds.setdefault(arm, []).append(pred)
                log.info("%s %s seed %d: auroc %.4f", name, arm, seed, row["auroc"])
        scores[name] = {
            "y": test["y"].to_numpy(),
            "tau": test["tau"].to_numpy(),
            "observed": test["observed"].to_numpy(),
            "users": test["user_id"].to_numpy(dtype=object),
            "preds": {arm: [_slim(p) for p in seed_preds] for arm, seed_preds in preds.items()},
        }
    return {"title": spec["title"], "rows": rows, "scores": scores, "compare": spec["compare"]}


def _slim(pred: dict) -> dict:
    """What the bootstrap reads (the cache keeps no survival matrices)."""
    return {k: pred[k] for k in ("p", "later", "ibs_rows") if k in pred}


def study_bootstrap(study: dict, draws: int) -> pd.DataFrame:
    """Arm A minus arm B of each compared pair, per dataset, on each metric that both have."""
    out = []
    for name, sc in study["scores"].items():
        for pair in study["compare"]:
            a, b, metrics = pair["a"], pair["b"], pair["metrics"]
            for metric in metrics:
                xa = [metric_input(p, metric) for p in sc["preds"].get(a, [])]
                xb = [metric_input(p, metric) for p in sc["preds"].get(b, [])]
                if not xa or not xb or not comparable(xa + xb):
                    continue
                res = paired_bootstrap(
                    y_by_cutoff=[sc["y"]],
                    users_by_cutoff=[sc["users"]],
                    a_by_cutoff=[xa],
                    b_by_cutoff=[xb],
                    metric=metric,
                    tau_by_cutoff=[sc["tau"]],
                    observed_by_cutoff=[sc["observed"]],
                    n_draws=draws,
                    seed=0,
                )
                out.append(
                    {
                        "dataset": name,
                        "a": a,
                        "b": b,
                        "metric": metric,
                        "mean_diff": res["mean_diff"],
                        "lo": res["lo"],
                        "hi": res["hi"],
                    }
                )
    return pd.DataFrame(out)


def study_markdown(key: str, study: dict, boot: pd.DataFrame) -> str:
    """One study's README block: the arms' metrics (mean ± sd over seeds) and the paired intervals."""
    rows = pd.DataFrame(study["rows"])
    shown = [(c, h) for c, h in _SHOWN if c in rows and rows[c].notna().any()]
    body = []
    for (dataset, arm), part in rows.groupby(["dataset", "arm"], sort=False):
        body.append(
            [dataset, arm, str(len(part))]
            + [mean_std_cell(part[c]) for c, _ in shown]
            + [mean_std_cell(part["seconds"], 1)]
        )
    header = ["dataset", "arm", "runs"] + [h for _, h in shown] + ["seconds"]
    note = f"`--only {key}`; one seed per arm unless runs say more."
    if "val_calib_large" in dict(shown):
        note += (
            " Validation: the validation users of the latest training cutoff, as scored (after"
            " the recalibration where it was kept); the period before the test one."
        )
    parts = [f"### {study['title']}", note, table(header, body)]
    if not boot.empty:
        metrics = list(boot["metric"].drop_duplicates())
        keyed = {(r.dataset, r.a, r.b, r.metric): r for r in boot.itertuples()}
        lines = []
        for dataset, a, b in dict.fromkeys(zip(boot["dataset"], boot["a"], boot["b"])):
            cells = []
            for m in metrics:
                r = keyed.get((dataset, a, b, m))
                cells.append(interval_cell(r.mean_diff, r.lo, r.hi) if r is not None else "–")
            lines.append([dataset, f"{a} − {b}"] + cells)
        parts.append(table(["dataset", "difference"] + metrics, lines))
    return "\n\n".join(parts)

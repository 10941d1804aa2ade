"""What the benchmark derives from the scored runs: oracle ratios, bootstrap intervals, fairness."""

from __future__ import annotations

import numpy as np
import pandas as pd

from seqchurn.bootstrap import paired_bootstrap
from seqchurn.fairness import derived_groups, fairness_report


def add_oracle_ratio(results: pd.DataFrame) -> None:
    """Add `oracle_ratio` to `results`: the AUROC lift over chance as a share of the oracle's."""
    oracle = results[results["method"] == "oracle"].set_index("dataset")["auroc"]
    ref = results["dataset"].map(oracle)
    results["oracle_ratio"] = (results["auroc"] - 0.5) / (ref - 0.5)


_INPUT = {"cindex": "later", "ibs": "ibs_rows"}  # what each metric reads; the rest read p


def metric_input(pred: dict, metric: str) -> np.ndarray | None:
    return pred.get(_INPUT.get(metric, "p"))


def comparable(arrays: list) -> bool:
    """Every array there and finite: a method without a curve has no IBS to compare."""
    return all(a is not None and np.isfinite(a).all() for a in arrays)


def bootstrap_table(
    scores: dict, models: list[str], references: dict[str, tuple], draws: int
) -> pd.DataFrame:
    """Each model (all seeds) minus each reference, per dataset group, pooled over its cutoffs.

    Args:
        scores: dataset -> {group, y, tau, observed, users, preds}, preds being method -> a
            list (one per seed) of {"p", "later"} and, for methods with a survival curve,
            "ibs_rows" (each row's share of the integrated Brier score).
        models: the methods to compare; references: reference -> the metrics to compare on.
        draws: bootstrap draws (seed 0, so a rerun gives the same intervals).
        A (method, reference, metric) with an input missing or NaN at some cutoff is left out.

    Returns:
        One row per (group, method, reference, metric): mean_diff, lo, hi, per_cutoff.
    """
    rows = []
    for group in sorted({v["group"] for v in scores.values()}):
        parts = [v for v in scores.values() if v["group"] == group]
        methods = [m for m in models if m in parts[0]["preds"]]
        for ref, metrics in references.items():
            if ref not in parts[0]["preds"]:
                continue
            for method in methods:
                for metric in metrics:
                    a = [[metric_input(pr, metric) for pr in v["preds"][method]] for v in parts]
                    b = [[metric_input(v["preds"][ref][0], metric)] for v in parts]
                    if not comparable([x for cut in a + b for x in cut]):
                        continue
                    res = paired_bootstrap(
                        y_by_cutoff=[v["y"] for v in parts],
                        users_by_cutoff=[v["users"] for v in parts],
                        a_by_cutoff=a,
                        b_by_cutoff=b,
                        metric=metric,
                        tau_by_cutoff=[v["tau"] for v in parts],
                        observed_by_cutoff=[v["observed"] for v in parts],
                        n_draws=draws,
                        seed=0,
                    )
                    rows.append(
                        {
                            "group": group,
                            "method": method,
                            "reference": ref,
                            "metric": metric,
                            "mean_diff": res["mean_diff"],
                            "lo": res["lo"],
                            "hi": res["hi"],
                            "per_cutoff": res.get("per_cutoff"),
                        }
                    )
    return pd.DataFrame(rows)


def fairness_table(scores: dict, results: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Per derived group (tenure cohort, spend tertile) for the best of `spec["models"]`, seed 0.

    Args:
        scores: as for `bootstrap_table`; the entry of `spec["dataset"]` also holds the
            cleaned `events` and the `test_cutoff` day.
        results: the per-run metrics, to pick the model of highest mean AUROC.
        spec: protocol.yaml's `fairness` (dataset, models, threshold).

    Returns:
        `fairness.fairness_report` with a `method` column; empty when nothing was run.
    """
    ds = scores.get(spec["dataset"])
    candidates = [m for m in spec["models"] if ds is not None and m in ds["preds"]]
    if not candidates:
        return pd.DataFrame()
    mean_auc = results[results["dataset"] == spec["dataset"]].groupby("method")["auroc"].mean()
    best = max(candidates, key=lambda m: mean_auc.get(m, -1.0))
    snaps = pd.DataFrame({"user_id": ds["users"], "cutoff": ds["test_cutoff"]})
    groups = derived_groups(ds["events"], snaps)
    p = ds["preds"][best][0]["p"]
    return fairness_report(ds["y"], p, groups, threshold=spec["threshold"]).assign(method=best)

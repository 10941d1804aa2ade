"""Evaluation: score_table against reference libraries, weighted bootstrap metrics, paired bootstrap, README helpers."""

from __future__ import annotations

import os
import stat

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines.utils import concordance_index
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score
from torchmetrics.classification import BinaryCalibrationError

from seqchurn.evaluation import (
    calibration_error,
    paired_bootstrap,
    reliability_plot,
    replace_between_markers,
    results_markdown,
    roc_pr_plots,
    score_table,
    weighted_metric,
)


def _data(n: int, seed: int, ties: bool = False):
    """Labels with a CDNOW-like base rate, tau = 0 for churners, later tau or censoring for returners."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.75).astype(np.int64)
    p = np.clip(0.6 + 0.25 * (y - 0.5) + rng.normal(0, 0.2, n), 0.01, 0.99)
    observed = (y == 1) | (rng.random(n) < 0.6)
    tau = np.where(y == 1, 0, rng.integers(1, 120, n)).astype(np.float64)
    tau = np.where(observed, tau, 90.0)
    later = -p + rng.normal(0, 0.1, n)
    if ties:
        p, later = np.round(p, 1), np.round(later, 1)
    return y, p, tau, observed, later


def test_score_table_matches_reference_libraries():
    y, p, tau, observed, later = _data(600, 0)
    table = score_table(y, {"a": p, "b": 1 - p}, tau, observed, {"a": later})
    assert list(table["method"]) == ["a", "b"]
    row = table.iloc[0]
    assert row["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert row["ap_churners"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert row["ap_returners"] == pytest.approx(average_precision_score(1 - y, 1 - p), abs=1e-12)
    assert row["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert row["log_loss"] == pytest.approx(log_loss(y, p), abs=1e-9)
    ece = BinaryCalibrationError(n_bins=15, norm="l1")(torch.tensor(p), torch.tensor(y))
    assert row["ece"] == pytest.approx(float(ece), abs=1e-6)
    top = np.argsort(-p)[:60]
    assert row["lift10"] == pytest.approx(y[top].mean() / y.mean(), abs=1e-12)
    assert row["cindex"] == pytest.approx(concordance_index(tau, later, observed), abs=1e-12)
    # No `later` score: ranked by -p_churn, as DESIGN section 8 scores classifiers.
    assert table.iloc[1]["cindex"] == pytest.approx(
        concordance_index(tau, -(1 - p), observed), abs=1e-12
    )


def test_calibration_error_bins_like_torchmetrics_at_edges():
    p = np.array([0.0, 1 / 15, 0.5, 14 / 15, 1.0, 1.0, 0.2])
    y = np.array([0, 1, 1, 0, 1, 0, 1])
    ref = BinaryCalibrationError(n_bins=15, norm="l1")(torch.tensor(p), torch.tensor(y))
    assert calibration_error(p, y) == pytest.approx(float(ref), abs=1e-6)


def test_score_table_refuses_nan_and_bad_shapes():
    y, p, tau, observed, _ = _data(50, 1)
    p[7] = np.nan
    with pytest.raises(ValueError, match="NaN.*row 7"):
        score_table(y, {"gappy": p}, tau, observed)
    with pytest.raises(ValueError, match="shape"):
        score_table(y, {"short": p[:10]}, tau, observed)


@pytest.mark.parametrize("metric", ["auroc", "ap_returners", "brier", "cindex"])
@pytest.mark.parametrize("ties", [False, True])
def test_weighted_metric_equals_explicitly_repeated_rows(metric, ties):
    y, p, tau, observed, later = _data(400, 2, ties=ties)
    if metric == "cindex":
        tau = np.where(
            y == 1, tau, np.round(tau * 1.37, 2)
        )  # many distinct times: a deep split tree
    score = later if metric == "cindex" else p
    rng = np.random.default_rng(3)
    weights = rng.integers(0, 4, size=(len(y), 3))  # zeros drop rows, 2 and 3 repeat them
    reference = {
        "auroc": lambda r: roc_auc_score(y[r], p[r]),
        "ap_returners": lambda r: average_precision_score(1 - y[r], 1 - p[r]),
        "brier": lambda r: np.mean((p[r] - y[r]) ** 2),
        "cindex": lambda r: concordance_index(tau[r], later[r], observed[r]),
    }[metric]
    got = weighted_metric(metric, score, y, weights, tau, observed)
    for k in range(weights.shape[1]):
        rows = np.repeat(np.arange(len(y)), weights[:, k])
        assert got[k] == pytest.approx(reference(rows), abs=1e-12)
    # Unit weights give the plain metric, the bootstrap's point estimate.
    assert weighted_metric(metric, score, y, np.ones(len(y)), tau, observed) == pytest.approx(
        reference(np.arange(len(y))), abs=1e-12
    )


def _two_cutoffs(n: int, seed: int):
    """The same customers at two cutoffs (rows in different orders) plus some seen at one only."""
    rng = np.random.default_rng(seed)
    users = np.array([f"u{i:05d}" for i in range(n + 40)], dtype=object)
    parts = []
    for c, chosen in enumerate((users[:n], rng.permutation(users[40:]))):
        y, p, tau, observed, later = _data(len(chosen), seed + c)
        parts.append(
            {"users": chosen, "y": y, "p": p, "tau": tau, "observed": observed, "later": later}
        )
    return parts


def _boot(parts, a, b, metric, draws=200, seed=0):
    return paired_bootstrap(
        y_by_cutoff=[q["y"] for q in parts],
        users_by_cutoff=[q["users"] for q in parts],
        a_by_cutoff=a,
        b_by_cutoff=b,
        metric=metric,
        tau_by_cutoff=[q["tau"] for q in parts],
        observed_by_cutoff=[q["observed"] for q in parts],
        n_draws=draws,
        seed=seed,
    )


@pytest.mark.parametrize("metric", ["auroc", "brier", "ap_returners", "cindex"])
def test_identical_predictions_give_a_zero_width_interval(metric):
    parts = _two_cutoffs(300, 4)
    key = "later" if metric == "cindex" else "p"
    same = [[q[key], q[key]] for q in parts]
    res = _boot(parts, same, [[q[key]] for q in parts], metric)
    assert res["mean_diff"] == 0.0 and res["lo"] == 0.0 and res["hi"] == 0.0
    assert all(pc == {"mean_diff": 0.0, "lo": 0.0, "hi": 0.0} for pc in res["per_cutoff"])


def test_clearly_better_predictor_has_an_interval_away_from_zero():
    parts = _two_cutoffs(800, 5)
    rng = np.random.default_rng(6)
    noise = [[rng.uniform(0.01, 0.99, len(q["y"]))] for q in parts]
    good = [[q["p"], np.clip(q["p"] + 0.01, 0, 1)] for q in parts]  # two seeds of A
    auroc = _boot(parts, good, noise, "auroc")
    assert 0 < auroc["lo"] <= auroc["mean_diff"] <= auroc["hi"]
    for pc in auroc["per_cutoff"]:
        assert 0 < pc["lo"] <= pc["mean_diff"] <= pc["hi"]
    brier = _boot(parts, good, noise, "brier")  # A - B: lower is better, so below zero
    assert brier["lo"] <= brier["hi"] < 0
    cidx = _boot(parts, [[-q["p"]] for q in parts], [[-n[0]] for n in noise], "cindex")
    assert cidx["lo"] > 0


def test_point_estimate_is_the_mean_of_per_cutoff_score_table_differences():
    parts = _two_cutoffs(300, 7)
    rng = np.random.default_rng(8)
    other = [np.clip(q["p"] + rng.normal(0, 0.1, len(q["y"])), 0, 1) for q in parts]
    res = _boot(parts, [[q["p"]] for q in parts], [[o] for o in other], "ap_returners", draws=20)
    diffs = [
        score_table(q["y"], {"a": q["p"], "b": o}, q["tau"], q["observed"])["ap_returners"]
        .diff()
        .iloc[-1]
        * -1
        for q, o in zip(parts, other)
    ]
    assert res["mean_diff"] == pytest.approx(np.mean(diffs), abs=1e-12)
    assert [pc["mean_diff"] for pc in res["per_cutoff"]] == pytest.approx(diffs, abs=1e-12)


def test_customers_are_resampled_jointly_across_cutoffs():
    """A beats B at cutoff 1 by exactly what it loses at cutoff 2, customer by customer.

    Drawing the same customers at both cutoffs, the pooled difference is 0 in every draw;
    resampling each cutoff on its own would give it a wide interval.
    """
    n = 500
    rng = np.random.default_rng(9)
    users = np.array([f"c{i}" for i in range(n)], dtype=object)
    gap = rng.uniform(0, 0.7, n)
    y = np.zeros(n, dtype=np.int64)
    perm = rng.permutation(n)  # cutoff 2 lists the customers in another order
    res = paired_bootstrap(
        y_by_cutoff=[y, y],
        users_by_cutoff=[users, users[perm]],
        a_by_cutoff=[[np.sqrt(gap)], [np.zeros(n)]],
        b_by_cutoff=[[np.zeros(n)], [np.sqrt(gap)[perm]]],
        metric="brier",
        n_draws=300,
        seed=0,
    )
    assert abs(res["lo"]) < 1e-12 and abs(res["hi"]) < 1e-12
    widths = [pc["hi"] - pc["lo"] for pc in res["per_cutoff"]]
    assert min(widths) > 0.02


def test_bootstrap_is_deterministic_for_a_seed():
    parts = _two_cutoffs(300, 10)
    rng = np.random.default_rng(0)
    a = [[np.clip(q["p"] + rng.normal(0, 0.1, len(q["p"])), 0, 1)] for q in parts]
    b = [[q["p"]] for q in parts]
    first = _boot(parts, a, b, "auroc", draws=150, seed=3)
    assert _boot(parts, a, b, "auroc", draws=150, seed=3) == first
    assert _boot(parts, a, b, "auroc", draws=150, seed=4)["lo"] != first["lo"]


def test_bootstrap_refuses_nan_and_unknown_metric():
    parts = _two_cutoffs(50, 11)
    bad = [q["p"].copy() for q in parts]
    bad[1][3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _boot(parts, [[x] for x in bad], [[q["p"]] for q in parts], "auroc", draws=5)
    with pytest.raises(ValueError, match="metric"):
        _boot(parts, [[q["p"]] for q in parts], [[q["p"]] for q in parts], "accuracy", draws=5)


def test_replace_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# title\n<!-- s -->\nold\nlines\n<!-- e -->\ntail\n")
    os.chmod(readme, 0o644)
    replace_between_markers(readme, "<!-- s -->", "<!-- e -->", "new table")
    assert readme.read_text() == "# title\n<!-- s -->\nnew table\n<!-- e -->\ntail\n"
    assert stat.S_IMODE(readme.stat().st_mode) == 0o644
    replace_between_markers(readme, "<!-- s -->", "<!-- e -->", "")
    assert readme.read_text() == "# title\n<!-- s -->\n<!-- e -->\ntail\n"
    with pytest.raises(ValueError, match="<!-- x -->"):
        replace_between_markers(readme, "<!-- x -->", "<!-- e -->", "t")
    readme.write_text("<!-- e -->\n<!-- s -->\n")
    with pytest.raises(ValueError, match="before"):
        replace_between_markers(readme, "<!-- s -->", "<!-- e -->", "t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]  # no temporary file left


def test_plots_are_written(tmp_path):
    y, p, *_ = _data(300, 12)
    preds = {"model": p, "flat": np.full(len(y), y.mean())}
    reliability_plot(y, preds, tmp_path / "rel.png")
    roc_pr_plots(y, preds, str(tmp_path / "ds"))
    names = sorted(f.name for f in tmp_path.iterdir())
    assert names == ["ds_pr.png", "ds_roc.png", "rel.png"]
    assert all((tmp_path / n).read_bytes()[:4] == b"\x89PNG" for n in names)


def test_results_markdown_tables():
    rows = []
    for ds in ("cdnow@1997-12-31", "cdnow@1997-09-30"):
        for seed, auroc in enumerate((0.80, 0.81, 0.82)):
            rows.append(
                {
                    "dataset": ds,
                    "group": "cdnow-h90",
                    "method": "lstm",
                    "seed": seed,
                    "auroc": auroc,
                    "brier": 0.1,
                    "seconds": 10.0,
                    "fit_s": 8.0,
                    "test_s": 1.0,
                }
            )
        rows.append(
            {
                "dataset": ds,
                "group": "cdnow-h90",
                "method": "logistic_rfm",
                "seed": None,
                "auroc": 0.79,
                "brier": 0.11,
                "seconds": 0.5,
                "fit_s": None,
                "test_s": None,
            }
        )
    results = pd.DataFrame(rows)
    per_cut = [
        {"mean_diff": 0.02, "lo": 0.01, "hi": 0.03},
        {"mean_diff": 0.01, "lo": -0.01, "hi": 0.02},
    ]
    boot = pd.DataFrame(
        [
            {
                "group": "cdnow-h90",
                "method": "lstm",
                "reference": "logistic_rfm",
                "metric": "auroc",
                "mean_diff": 0.015,
                "lo": 0.004,
                "hi": 0.025,
                "per_cutoff": per_cut,
            }
        ]
    )
    ablation = pd.DataFrame(
        [
            {"ablation": "default", "auroc": 0.80, "seconds": 5.0},
            {"ablation": "no summary features", "auroc": 0.79, "seconds": 4.0},
        ]
    )
    gaps = pd.DataFrame(
        [
            {
                "group_column": "tenure_tertile",
                "metric": "auroc",
                "gap": 0.05,
                "low_group": "low",
                "low_value": 0.75,
                "high_group": "high",
                "high_value": 0.80,
            }
        ]
    )
    meta = {
        "seeds": [0, 1, 2],
        "draws": 1000,
        "minutes": 42.0,
        "cpus": 2,
        "datasets": [
            {
                "dataset": "cdnow@1997-12-31",
                "n_test": 23570,
                "churn_rate": 0.838,
                "test_cutoff": "1997-12-31",
            }
        ],
    }
    md = results_markdown(results, boot, ablation, gaps, meta)
    assert "Seeds 0, 1, 2; 1000 bootstrap draws; 42.0 min on 2 CPUs." in md
    assert (
        "#### cdnow@1997-12-31 (23,570 test customers, churn rate 0.838, test cutoff 1997-12-31)"
        in md
    )
    assert (
        "| lstm | 3 | 0.8100 ± 0.0100 | 0.1000 ± 0.0000 | 10.0 ± 0.0 (8.0 ± 0.0 / 1.0 ± 0.0) |"
        in md
    )
    assert "| logistic_rfm | 1 | 0.7900 | 0.1100 | 0.5 |" in md
    assert "| lstm | logistic_rfm | **+0.0150 [+0.0040, +0.0250]** |" in md
    assert "| lstm | logistic_rfm | cdnow@1997-09-30 | +0.0100 [-0.0100, +0.0200] |" in md
    assert "| no summary features | 0.7900 | -0.0100 | 4.0 |" in md
    assert "| tenure_tertile | auroc | 0.0500 | low (0.7500) | high (0.8000) |" in md
    empty = results_markdown(results, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), {})
    assert "#### cdnow@1997-09-30" in empty
    assert "Paired customer-level bootstrap" not in empty and "Ablations" not in empty

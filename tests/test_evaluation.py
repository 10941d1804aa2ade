"""Benchmark scoring: score_table against reference libraries, the weighted bootstrap metrics, the
paired customer bootstrap, and the plots."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from lifelines.utils import concordance_index
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score
from torchmetrics.classification import BinaryCalibrationError

from seqchurn.bootstrap import _stat, paired_bootstrap
from seqchurn.metrics import (
    SCORE_COLUMNS,
    UndefinedMetricWarning,
    calibration_error,
    report_metrics,
    score_table,
)
from seqchurn.plots import figure, reliability_plot, roc_pr_plots, save

from conftest import ROOT


def _data(n: int, seed: int, ties: bool = False):
    """Labels at a CDNOW-like base rate, tau = 0 for churners, later tau or censoring otherwise."""
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


def test_score_table_is_report_metrics_the_training_test_metrics():
    """The README's numbers and train()'s test/* metrics are one definition, not two."""
    y, p, tau, observed, later = _data(400, 5)
    row = score_table(y, {"a": p}, tau, observed, {"a": later}).iloc[0]
    ref = report_metrics(y, p, tau=tau, observed=observed, later=later)
    assert {c: row[c] for c in SCORE_COLUMNS} == {c: ref[k] for c, k in SCORE_COLUMNS.items()}
    assert row["ece"] == calibration_error(p, y)  # 15 bins, as test/ece


def test_score_table_reports_undefined_metrics_as_nan_with_a_warning():
    y = np.ones(6, dtype=np.int64)  # one class: AUROC and AP have no meaning
    p = np.linspace(0.2, 0.9, 6)
    with pytest.warns(UndefinedMetricWarning):
        row = score_table(y, {"a": p}, np.zeros(6), np.ones(6, bool)).iloc[0]
    assert np.isnan(row["auroc"]) and np.isnan(row["ap_returners"])
    assert row["brier"] == pytest.approx(np.mean((p - 1) ** 2))


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


def weighted_metric(metric: str, score, y, weights, tau=None, observed=None):
    """The bootstrap's metric `metric` under row weights: (N,) -> float, (N, D) -> (D,)."""
    stat = _stat(
        metric, score=np.asarray(score, float), y=np.asarray(y), tau=tau, observed=observed
    )
    w = np.asarray(weights, dtype=np.float64)
    out = stat(w[:, None] if w.ndim == 1 else w)
    return float(out[0]) if w.ndim == 1 else out


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


def test_plots_are_written(tmp_path):
    y, p, *_ = _data(300, 12)
    preds = {"model": p, "flat": np.full(len(y), y.mean())}
    reliability_plot(y, preds, tmp_path / "rel.png")
    roc_pr_plots(y, preds, str(tmp_path / "ds"))
    names = sorted(f.name for f in tmp_path.iterdir())
    assert names == ["ds_pr.png", "ds_roc.png", "rel.png"]
    assert all((tmp_path / n).read_bytes()[:4] == b"\x89PNG" for n in names)


def test_figure_and_save_write_a_png_atomically(tmp_path):
    fig, axes = figure(3)
    assert len(axes) == 3
    axes[0].plot([0, 1], [1, 0])
    path = save(fig, tmp_path / "sub" / "f.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert [f.name for f in path.parent.iterdir()] == ["f.png"]  # no temporary file left


def test_no_module_of_the_package_uses_pyplot_or_switches_the_backend():
    pattern = re.compile(
        r"^\s*(import matplotlib\.pyplot|from matplotlib import pyplot|from matplotlib\.pyplot "
        r"import)|matplotlib\.use\(",
        flags=re.MULTILINE,
    )
    src = ROOT / "src" / "seqchurn"
    assert not [str(f) for f in src.rglob("*.py") if pattern.search(f.read_text())]

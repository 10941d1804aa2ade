"""The benchmark of DESIGN section 8: every model x seeds and every baseline, on the same snapshots.

    python benchmarks/run.py            # full run: benchmarks/results/ and the README table
    python benchmarks/run.py --quick    # a few minutes, to a temporary folder, never the README

The protocol is benchmarks/protocol.yaml: datasets, models, seeds, references and ablations
as lists of Hydra overrides of conf/train.yaml. Each run is `seqchurn.train.train(cfg)` on the
composed config. Methods: the ChurnModule models (every seed) and the baselines (logistic
RFM, recency, BG/NBD, logistic regression / random forest / LightGBM on the summary
features, LightGBM on per type x window aggregates, Cox and Kaplan-Meier for the time to
churn), each with the survival metrics where it gives a curve, then paired customer-level
bootstrap intervals against the references, ablations, a fairness report, plots, and the
README section (benchmarks/report.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from seqchurn.data.labels import to_date
from seqchurn.fairness import largest_gaps
from seqchurn.metrics import UndefinedMetricWarning, score_table
from seqchurn.survival_metrics import SURVIVAL_COLUMNS, Censoring, ibs_rows, survival_scores
from seqchurn.plots import reliability_plot, roc_pr_plots
from seqchurn.train import train

# Siblings in benchmarks/: Python puts a script's own folder first on its path.
from baselines import run_baselines
from compare import add_oracle_ratio, bootstrap_table, fairness_table
from protocol import compose_cfg, load_protocol, merge_overrides
from report import (
    BENCHMARK_MARKERS,
    README,
    RESULTS,
    check_markers,
    replace_between_markers,
    results_markdown,
)

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
    return {"p": p, "later": later, "surv": surv}, objects["datamodule"], metrics


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


def run_ablations(protocol: dict, work: Path) -> pd.DataFrame:
    """Each ablation variant of the protocol, scored like the benchmark's methods."""
    rows = []
    for variant in protocol["ablations"]["variants"]:
        t0 = time.perf_counter()
        overrides = merge_overrides(variant["overrides"], protocol["overrides"])
        pred, dm, _ = run_model(overrides, work)
        edges = [float(e) for e in dm.bin_edges]
        row = score_row(dm.snapshots["test"], name=variant["name"], pred=pred, edges=edges)
        row.update(ablation=variant["name"], seconds=time.perf_counter() - t0)
        rows.append(row)
        log.info("ablation %s: auroc %.4f", variant["name"], row["auroc"])
    return pd.DataFrame(rows)


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _parser(models: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small data, 1 seed, a temp folder, no README"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument(
        "--out",
        default=None,
        help="results folder (default benchmarks/results/, or a temp one with --quick)",
    )
    parser.add_argument(
        "--draws", type=int, default=None, help="bootstrap draws (default: the protocol's)"
    )
    parser.add_argument(
        "--datasets", nargs="+", default=None, help="a subset of the datasets, by name"
    )
    parser.add_argument("--models", nargs="+", default=list(models), choices=models)
    parser.add_argument("--no-ablations", action="store_true")
    return parser


def main() -> None:
    models = load_protocol(quick=False)["models"]
    parser = _parser(models)
    args = parser.parse_args()
    protocol = load_protocol(quick=args.quick)
    full = (
        not args.quick
        and args.datasets is None
        and list(args.models) == models
        and not args.no_ablations
    )
    if full:  # fail now, not after the whole run
        check_markers(README, BENCHMARK_MARKERS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "seqchurn.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    protocol["seeds"] = args.seeds or protocol["seeds"]
    draws = args.draws or protocol["draws"]
    default_out = Path(tempfile.mkdtemp(prefix="seqchurn-bench-")) if args.quick else RESULTS
    out = Path(args.out) if args.out else default_out
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="seqchurn-runs-"))
    started = time.perf_counter()

    names = [d["name"] for d in protocol["datasets"]]
    chosen = [
        d for d in protocol["datasets"] if args.datasets is None or d["name"] in args.datasets
    ]
    if not chosen:
        parser.error(f"--datasets: none of {args.datasets} is among {names}")
    absent = [d for d in chosen if "path" in d and not Path(d["path"]).exists()]
    if absent and not args.quick:  # a full run's tables must hold every dataset
        parser.error(f"{absent[0]['name']} reads {absent[0]['path']}, which does not exist")
    for d in absent:
        log.warning("skipping %s: %s does not exist", d["name"], d["path"])
    chosen = [d for d in chosen if d not in absent]
    if not chosen:
        parser.error("no dataset left to run")
    rows, scores = [], {}
    for ds in chosen:
        ds_rows, scores[ds["name"]] = run_dataset(
            ds, protocol=protocol, models=args.models, work=work
        )
        rows += ds_rows
        y = scores[ds["name"]]["y"]
        firsts = {m: v[0]["p"] for m, v in scores[ds["name"]]["preds"].items()}
        reliability_plot(y, firsts, plots / f"reliability_{ds['name']}.png")
        roc_pr_plots(y, firsts, str(plots / f"{ds['name']}"))

    results = pd.DataFrame(rows)
    add_oracle_ratio(results)
    boot = bootstrap_table(scores, models=models, references=protocol["references"], draws=draws)
    ablation = pd.DataFrame() if args.no_ablations else run_ablations(protocol, work)
    fairness = fairness_table(scores, results=results, spec=protocol["fairness"])
    elapsed = time.perf_counter() - started

    results.to_csv(out / "benchmark.csv", index=False)
    boot.to_csv(out / "bootstrap.csv", index=False)
    ablation.to_csv(out / "ablations.csv", index=False)
    fairness.to_csv(out / "fairness.csv", index=False)
    meta = {
        "quick": args.quick,
        "seeds": protocol["seeds"],
        "draws": draws,
        "minutes": elapsed / 60,
        "cpus": os.cpu_count(),
        "datasets": [v["facts"] for v in scores.values()],
        "ablation_title": protocol["ablations"]["title"],
    }
    payload = {
        "meta": meta,
        "results": results.to_dict("records"),
        "bootstrap": boot.to_dict("records"),
        "ablations": ablation.to_dict("records"),
        "fairness": fairness.to_dict("records"),
    }
    (out / "benchmark.json").write_text(json.dumps(payload, indent=1, default=_jsonable))
    markdown = results_markdown(
        results, boot=boot, ablation=ablation, gaps=largest_gaps(fairness), meta=meta
    )
    (out / "results.md").write_text(markdown)
    if full:
        replace_between_markers(README, BENCHMARK_MARKERS, markdown)
    shutil.rmtree(work, ignore_errors=True)
    print(markdown)
    print(f"results in {out} ({elapsed / 60:.1f} min)")


if __name__ == "__main__":
    main()

"""The benchmark of DESIGN section 8: every model x seeds and every baseline, on the same snapshots.

    python scripts/benchmark.py            # full run: results/ and the README results table
    python scripts/benchmark.py --quick    # a few minutes, to a temporary folder, never the README

Datasets: cdnow-h90 at 1997-09-30 and 1997-12-31 (the shipped log), synthetic BG/NBD data and
the synthetic sequence process (both with their oracle). Methods: the three ChurnModule models
(3 seeds) and the baselines (logistic RFM, recency, BG/NBD, logistic regression / random forest
/ LightGBM on the summary features). Then paired customer-level bootstrap intervals against
logistic RFM and BG/NBD, ablations (LSTM, one seed), a fairness report, plots, and the README.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict
from sklearn.linear_model import LogisticRegression

from seqchurn.baselines.bgnbd import BGNBDBaseline
from seqchurn.baselines.rfm import LogisticRFM, recency_score
from seqchurn.baselines.trees import SummaryBaseline
from seqchurn.data.labels import make_snapshots, to_date
from seqchurn.evaluation import (
    paired_bootstrap,
    reliability_plot,
    replace_between_markers,
    results_markdown,
    roc_pr_plots,
    score_table,
)
from seqchurn.fairness import derived_groups, fairness_report, largest_gaps
from seqchurn.train import train

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("logistic", "lstm", "transformer")
# Every model against each reference; logistic RFM and BG/NBD on every metric, the summary-feature
# baselines (the sequence dataset's bar: per-type counts, LightGBM) on AUROC.
REFERENCES = {
    "logistic_rfm": ("auroc", "brier", "cindex", "ap_returners"),
    "bgnbd": ("auroc", "brier", "cindex"),
    "logreg_summary": ("auroc",),
    "lgbm_summary": ("auroc",),
}
BEGIN, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"
log = logging.getLogger("seqchurn.benchmark")


def datasets(quick: bool) -> list[dict]:
    """Each test snapshot of the protocol, as Hydra overrides; `group` pools cutoffs of one log."""
    syn_users = 2000 if quick else 10000
    seq_users = 3000 if quick else 20000
    cdnow = [
        {"name": "cdnow@1997-12-31", "group": "cdnow-h90", "overrides": ["data=cdnow"]},
        {
            "name": "cdnow@1997-09-30",
            "group": "cdnow-h90",
            "overrides": ["data=cdnow", "data.test_cutoff=1997-09-30", "data.train_cutoffs=null"],
        },
    ]
    synthetic = [
        {
            "name": "synthetic-bgnbd",
            "group": "synthetic-bgnbd",
            "overrides": ["data=synthetic", f"data.synthetic.n_users={syn_users}"],
        },
        {
            "name": "synthetic-sequence",
            "group": "synthetic-sequence",
            "overrides": ["data=synthetic_sequence", f"data.synthetic.n_users={seq_users}"],
        },
    ]
    return (cdnow[:1] if quick else cdnow) + synthetic


def compose_cfg(overrides: list[str], out_dir: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        cfg.paths.log_dir = str(out_dir)
        cfg.logger = None
    return cfg


def run_model(overrides: list[str], work: Path, quick: bool) -> tuple[dict, object, dict]:
    """Train one model; returns its test predictions aligned with the test snapshot rows."""
    extra = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
    if quick:
        extra.append("trainer.max_epochs=2")
    out = Path(tempfile.mkdtemp(dir=work))
    cfg = compose_cfg(overrides + extra, out)
    metrics, objects = train(cfg)
    pred = objects["test_predictions"]
    n = len(objects["datamodule"].snapshots["test"])
    p = np.full(n, np.nan)
    tau_mean = np.full(n, np.nan)
    p[pred["index"]] = pred["p_churn"]
    tau_mean[pred["index"]] = pred["tau_mean"]
    edges = objects["model"].hparams.bin_edges
    shutil.rmtree(out, ignore_errors=True)
    return {"p": p, "later": tau_mean if len(edges) > 1 else -p}, objects["datamodule"], metrics


def run_baselines(dm, seed: int) -> dict[str, dict]:
    """Every baseline scored on the datamodule's test snapshot rows, fitted without test-period data."""
    events, test = dm.events, dm.snapshots["test"]
    horizon, cutoff = int(dm.hparams.horizon_days), int(dm.test_cutoff)
    activity = dm.hparams.activity_event_types
    known_users = pd.concat(
        [dm.snapshots["train"]["user_id"], dm.snapshots["val"]["user_id"]]
    ).unique()
    single = make_snapshots(events, [max(dm.train_cutoffs)], horizon, cutoff, [0], activity)
    single = single[single["user_id"].isin(known_users)].reset_index(drop=True)
    out: dict[str, dict] = {}

    started = time.perf_counter()
    p = LogisticRFM(activity).fit(events, single).predict_proba(events, test)
    out["logistic_rfm"] = {"p": p, "later": -p, "seconds": time.perf_counter() - started}

    # Recency ranks by itself; a one-feature logistic fit on the same snapshot makes it a probability.
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
    out["bgnbd"] = {"p": p, "later": -p, "seconds": time.perf_counter() - started}

    for kind in ("logreg", "rf", "lgbm", "lgbm_untuned"):
        started = time.perf_counter()
        model = SummaryBaseline(
            kind=kind, activity_event_types=activity, horizon_days=horizon, seed=seed
        )
        model.fit(events, dm.snapshots["train"], dm.snapshots["val"], test_cutoff=cutoff)
        p = model.predict_proba(events, test)
        out[f"{kind}_summary"] = {"p": p, "later": -p, "seconds": time.perf_counter() - started}
    return out


def _ablations(quick: bool) -> list[tuple[str, list[str]]]:
    base = ["model=lstm", "seed=0"]
    return [
        ("default", base),
        ("lambda=0 (plain classifier)", base + ["model.loss_lambda=0"]),
        ("no summary features", base + ["model.encoder_kwargs.use_summary=false"]),
        ("one training cutoff", base + ["data.train_cutoffs=[1997-09-30]"]),
        ("pos_weight (returners up-weighted)", base + ["model.pos_weight=0.2"]),
        ("focal gamma=2", base + ["model.focal_gamma=2.0"]),
        ("balanced sampler", base + ["data.balanced_sampling=true"]),
    ][: 3 if quick else None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small data, 1 seed, a temp folder, no README"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument(
        "--out", default=None, help="results folder (default results/, or a temp one with --quick)"
    )
    parser.add_argument(
        "--draws", type=int, default=None, help="bootstrap draws (default 1000, 200 with --quick)"
    )
    parser.add_argument(
        "--datasets", nargs="+", default=None, help="a subset of the datasets, by name"
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--no-ablations", action="store_true")
    args = parser.parse_args()
    full = (
        not args.quick
        and args.datasets is None
        and list(args.models) == list(MODELS)
        and not args.no_ablations
    )
    if full:  # fail now, not after the whole run
        replace_between_markers(ROOT / "README.md", BEGIN, END, _readme_section(ROOT / "README.md"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "seqchurn.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    draws = args.draws or (200 if args.quick else 1000)
    out = (
        Path(args.out)
        if args.out
        else (Path(tempfile.mkdtemp(prefix="seqchurn-bench-")) if args.quick else ROOT / "results")
    )
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="seqchurn-runs-"))
    started = time.perf_counter()

    rows, scores, runs = [], {}, []
    chosen = [
        d for d in datasets(args.quick) if args.datasets is None or d["name"] in args.datasets
    ]
    if not chosen:
        parser.error(
            f"--datasets: none of {args.datasets} is among {[d['name'] for d in datasets(args.quick)]}"
        )
    for ds in chosen:
        preds: dict[str, list[dict]] = {}
        dm = None
        for model in args.models:
            for seed in seeds:
                t0 = time.perf_counter()
                pred, dm, metrics = run_model(
                    ds["overrides"] + [f"model={model}", f"seed={seed}"], work, args.quick
                )
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
        y, tau, observed = test["y"].to_numpy(), test["tau"].to_numpy(), test["observed"].to_numpy()
        for method, seed_preds in preds.items():
            for i, pred in enumerate(seed_preds):
                table = score_table(y, {method: pred["p"]}, tau, observed, {method: pred["later"]})
                row = table.iloc[0].to_dict()
                row.update(
                    dataset=ds["name"],
                    group=ds["group"],
                    method=method,
                    seed=seeds[i] if method in MODELS else None,
                    seconds=pred["seconds"],
                    fit_s=pred.get("fit_s"),
                    test_s=pred.get("test_s"),
                )
                rows.append(row)
        scores[ds["name"]] = {
            "group": ds["group"],
            "y": y,
            "tau": tau,
            "observed": observed,
            "users": test["user_id"].to_numpy(dtype=object),
            "preds": preds,
        }
        firsts = {m: v[0]["p"] for m, v in preds.items()}
        reliability_plot(y, firsts, plots / f"reliability_{ds['name']}.png")
        roc_pr_plots(y, firsts, str(plots / f"{ds['name']}"))
        runs.append(
            {
                "dataset": ds["name"],
                "n_test": int(len(y)),
                "churn_rate": float(y.mean()),
                "test_cutoff": to_date(int(dm.test_cutoff)),
            }
        )

    results = pd.DataFrame(rows)
    _add_oracle_ratio(results)
    boot = _bootstrap(scores, draws)
    ablation = pd.DataFrame() if args.no_ablations else _run_ablations(work, args.quick)
    fairness = _fairness(scores, results)
    elapsed = time.perf_counter() - started

    results.to_csv(out / "benchmark.csv", index=False)
    boot.to_csv(out / "bootstrap.csv", index=False)
    ablation.to_csv(out / "ablations.csv", index=False)
    fairness.to_csv(out / "fairness.csv", index=False)
    meta = {
        "quick": args.quick,
        "seeds": seeds,
        "draws": draws,
        "minutes": elapsed / 60,
        "cpus": os.cpu_count(),
        "datasets": runs,
    }
    payload = {
        "meta": meta,
        "results": results.to_dict("records"),
        "bootstrap": boot.to_dict("records"),
        "ablations": ablation.to_dict("records"),
        "fairness": fairness.to_dict("records"),
    }
    (out / "benchmark.json").write_text(json.dumps(payload, indent=1, default=_jsonable))
    markdown = results_markdown(results, boot, ablation, largest_gaps(fairness), meta)
    (out / "results.md").write_text(markdown)
    if full:
        replace_between_markers(ROOT / "README.md", BEGIN, END, markdown)
    shutil.rmtree(work, ignore_errors=True)
    print(markdown)
    print(f"results in {out} ({elapsed / 60:.1f} min)")


def _readme_section(path: Path) -> str:
    """The text between the README's benchmark markers, as it is (a dry run checks they exist)."""
    lines = path.read_text().splitlines()
    try:
        i, j = lines.index(BEGIN), lines.index(END)
    except ValueError:
        raise SystemExit(
            f"{path} lacks the {BEGIN} / {END} marker lines the results table goes between"
        )
    return "\n".join(lines[i + 1 : j])


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _add_oracle_ratio(results: pd.DataFrame) -> None:
    oracle = results[results["method"] == "oracle"].set_index("dataset")["auroc"]
    ref = results["dataset"].map(oracle)
    results["oracle_ratio"] = (results["auroc"] - 0.5) / (ref - 0.5)


def _bootstrap(scores: dict, draws: int) -> pd.DataFrame:
    """Each model (all seeds) minus each reference, per dataset group, pooled over its cutoffs."""
    rows = []
    groups = sorted({v["group"] for v in scores.values()})
    for group in groups:
        parts = [v for v in scores.values() if v["group"] == group]
        methods = [m for m in MODELS if m in parts[0]["preds"]]
        for ref, metrics in REFERENCES.items():
            if ref not in parts[0]["preds"]:
                continue
            for method in methods:
                for metric in metrics:
                    res = paired_bootstrap(
                        y_by_cutoff=[v["y"] for v in parts],
                        users_by_cutoff=[v["users"] for v in parts],
                        a_by_cutoff=[
                            [_metric_input(pr, metric) for pr in v["preds"][method]] for v in parts
                        ],
                        b_by_cutoff=[[_metric_input(v["preds"][ref][0], metric)] for v in parts],
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


def _metric_input(pred: dict, metric: str) -> np.ndarray:
    return pred["later"] if metric == "cindex" else pred["p"]


def _run_ablations(work: Path, quick: bool) -> pd.DataFrame:
    """LSTM, one seed, on CDNOW at 1997-12-31: which design choices carry the result."""
    rows = []
    for name, overrides in _ablations(quick):
        t0 = time.perf_counter()
        pred, dm, _ = run_model(["data=cdnow"] + overrides, work, quick)
        test = dm.snapshots["test"]
        table = score_table(
            test["y"].to_numpy(),
            {name: pred["p"]},
            test["tau"].to_numpy(),
            test["observed"].to_numpy(),
            {name: pred["later"]},
        )
        row = table.iloc[0].to_dict()
        row.update(ablation=name, seconds=time.perf_counter() - t0)
        rows.append(row)
        log.info("ablation %s: auroc %.4f", name, row["auroc"])
    return pd.DataFrame(rows)


def _fairness(scores: dict, results: pd.DataFrame) -> pd.DataFrame:
    """Per derived group (tenure cohort, spend tertile) on CDNOW at 1997-12-31, best sequence model, seed 0.

    The warning threshold is the one a user would act on: p_churn >= 0.5.
    """
    ds = scores.get("cdnow@1997-12-31")
    seq = [m for m in ("lstm", "transformer") if ds is not None and m in ds["preds"]]
    if not seq:
        return pd.DataFrame()
    mean_auc = results[results["dataset"] == "cdnow@1997-12-31"].groupby("method")["auroc"].mean()
    best = max(seq, key=lambda m: mean_auc.get(m, -1.0))
    from seqchurn.data.events import load_events
    from seqchurn.data.labels import to_day

    events, _ = load_events("cdnow", None, {}, merge_same_day=True)
    snaps = pd.DataFrame({"user_id": ds["users"], "cutoff": to_day("1997-12-31")})
    groups = derived_groups(events, snaps)
    p = ds["preds"][best][0]["p"]
    return fairness_report(ds["y"], p, groups, threshold=0.5).assign(method=best)


if __name__ == "__main__":
    sys.exit(main())

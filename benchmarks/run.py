"""The benchmark of DESIGN section 8: every model x seeds and every baseline, on the same snapshots.

    python benchmarks/run.py                    # full run: benchmarks/results/ and the README
    python benchmarks/run.py --only sequence    # rerun one section, merge the cached others
    python benchmarks/run.py --list             # the sections
    python benchmarks/run.py --report           # no run: the report of the cached sections
    python benchmarks/run.py --quick            # a few minutes, to a temporary folder

The protocol is benchmarks/protocol.yaml: datasets, models, seeds, references, ablations and
studies as lists of Hydra overrides of conf/train.yaml. Each run is `seqchurn.train.train(cfg)`
on the composed config. Methods: the ChurnModule models (every seed) and the baselines
(logistic RFM, recency, BG/NBD, logistic regression / random forest / LightGBM on the summary
features, LightGBM on per type x window aggregates, Cox and Kaplan-Meier for the time to
churn), each with the survival metrics where it gives a curve, then paired customer-level
bootstrap intervals against the references, ablations, the studies (benchmarks/studies.py:
what the sequence buys, calibration, data scaling, pretraining), a fairness report, plots,
and the README section (benchmarks/report.py).

Sections: each test snapshot (its dataset's name), `ablations` and each study. A section's
scores are cached in the results folder's cache/ with the commit and the protocol spec that
made them; the report merges every cached section whose spec is still the protocol's, and the
README is rewritten from them, naming any section of the protocol that is not there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import pickle
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from seqchurn.fairness import largest_gaps
from seqchurn.io import atomic_write
from seqchurn.plots import reliability_plot, roc_pr_plots

# Siblings in benchmarks/: Python puts a script's own folder first on its path.
from compare import add_oracle_ratio, bootstrap_table, fairness_table
from protocol import load_protocol, merge_overrides
from report import (
    BENCHMARK_MARKERS,
    README,
    RESULTS,
    ROOT,
    check_markers,
    replace_between_markers,
    results_markdown,
)
from scoring import run_dataset, run_model, score_row
from studies import run_study, study_bootstrap, study_markdown

log = logging.getLogger("seqchurn.benchmark")


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


# -- sections and their cache --------------------------------------------------------------------
def sections_of(protocol: dict) -> dict[str, dict]:
    """Section name -> {"kind": dataset | ablations | study, "spec": what makes its scores}.

    A study has one section per dataset, named study:dataset (`--only study` runs them all).
    """
    shared = {"overrides": protocol["overrides"]}
    out = {}
    for d in protocol["datasets"]:
        spec = {**shared, "dataset": d, "models": protocol["models"], "seeds": protocol["seeds"]}
        out[d["name"]] = {"kind": "dataset", "spec": spec}
    out["ablations"] = {"kind": "ablations", "spec": {**shared, **protocol["ablations"]}}
    by_name = {d["name"]: d for d in protocol["datasets"]}
    for key, study in protocol["studies"].items():
        for name in study["datasets"]:
            if name in by_name:  # one section per study and dataset: cached apart
                part = {**study, "datasets": [name]}
                spec = {**shared, "study": part, "dataset": by_name[name]}
                out[f"{key}:{name}"] = {"kind": "study", "study": key, "spec": spec}
    return out


def _spec_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cache_path(cache: Path, name: str) -> Path:
    return cache / (name.replace("@", "_at_").replace("/", "_") + ".pkl")


def save_section(cache: Path, name: str, spec: dict, payload, minutes: float) -> None:
    entry = {"spec_hash": _spec_hash(spec), "commit": _commit(), "minutes": minutes}
    data = pickle.dumps({**entry, "payload": payload})
    atomic_write(_cache_path(cache, name), lambda tmp: Path(tmp).write_bytes(data))


def load_section(cache: Path, name: str, spec: dict) -> dict | None:
    """The cached section, or None when absent or made by another spec of it."""
    path = _cache_path(cache, name)
    if not path.exists():
        return None
    entry = pickle.loads(path.read_bytes())
    return entry if entry["spec_hash"] == _spec_hash(spec) else None


def run_section(name: str, section: dict, protocol: dict, work: Path):
    kind, spec = section["kind"], section["spec"]
    if kind == "dataset":
        return run_dataset(spec["dataset"], protocol=protocol, models=spec["models"], work=work)
    if kind == "ablations":
        return run_ablations(protocol, work)
    datasets = {d["name"]: d for d in protocol["datasets"]}
    return run_study(spec["study"], datasets=datasets, protocol=protocol, work=work)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small data, 1 seed, a temp folder, no README"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="SECTION",
        help="run these sections (dataset names, a dataset group, ablations, a study), "
        "merge the cached others",
    )
    parser.add_argument("--list", action="store_true", help="print the sections and exit")
    parser.add_argument(
        "--report", action="store_true", help="run nothing: the report of the cached sections"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="models of the dataset sections (another list than the protocol's never reaches "
        "the README: its sections carry another spec)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="results folder (default benchmarks/results/, or a temp one with --quick)",
    )
    parser.add_argument(
        "--draws", type=int, default=None, help="bootstrap draws (default: the protocol's)"
    )
    return parser


def _chosen(only: list[str] | None, sections: dict, protocol: dict, parser) -> list[str]:
    if only is None:
        return list(sections)
    groups: dict[str, list[str]] = {}
    for d in protocol["datasets"]:
        groups.setdefault(d["group"], []).append(d["name"])
    for name, section in sections.items():
        if section["kind"] == "study":
            groups.setdefault(section["study"], []).append(name)
    chosen = []
    for item in only:
        if item in sections:
            chosen.append(item)
        elif item in groups:
            chosen += groups[item]
        else:
            parser.error(f"--only: no section {item!r}; see --list")
    return list(dict.fromkeys(chosen))


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    protocol = load_protocol(quick=args.quick)
    protocol["models"] = args.models or protocol["models"]
    sections = sections_of(protocol)
    if args.list:
        for name, section in sections.items():
            print(f"{name:<28} {section['kind']}")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "seqchurn.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    draws = args.draws or protocol["draws"]
    default_out = Path(tempfile.mkdtemp(prefix="seqchurn-bench-")) if args.quick else RESULTS
    out = Path(args.out) if args.out else default_out
    writes_readme = not args.quick and args.out is None
    if writes_readme:  # fail now, not after the whole run
        check_markers(README, BENCHMARK_MARKERS)
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    chosen = [] if args.report else _chosen(args.only, sections, protocol, parser)
    missing_files = [
        n
        for n in chosen
        if sections[n]["kind"] == "dataset"
        and "path" in sections[n]["spec"]["dataset"]
        and not Path(sections[n]["spec"]["dataset"]["path"]).exists()
    ]
    if missing_files and not args.quick:  # the protocol's tables must hold every dataset
        path = sections[missing_files[0]]["spec"]["dataset"]["path"]
        parser.error(f"{missing_files[0]} reads {path}, which does not exist")
    for name in missing_files:
        log.warning("skipping %s: its file does not exist", name)
    work = Path(tempfile.mkdtemp(prefix="seqchurn-runs-"))
    for name in chosen:
        if name in missing_files:
            continue
        started = time.perf_counter()
        payload = run_section(name, sections[name], protocol, work)
        minutes = (time.perf_counter() - started) / 60
        save_section(cache, name, sections[name]["spec"], payload, minutes)
        log.info("section %s: %.1f min", name, minutes)
    shutil.rmtree(work, ignore_errors=True)
    cached = {n: load_section(cache, n, s["spec"]) for n, s in sections.items()}
    absent = [n for n, entry in cached.items() if entry is None and n not in missing_files]
    if absent:
        log.warning("not in the report (never run, or run under another spec): %s", absent)
    markdown = report(
        cached, protocol, sections, draws=draws, out=out, quick=args.quick, absent=absent
    )
    if writes_readme:
        replace_between_markers(README, BENCHMARK_MARKERS, markdown)
    print(markdown)
    print(f"results in {out}")


def report(
    cached: dict, protocol: dict, sections: dict, draws: int, out: Path, quick: bool, absent=()
):
    """Every table from the cached sections: CSVs, JSON, plots and the markdown (which names
    the sections of the protocol that are not there)."""
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    rows, scores = [], {}
    for name, entry in cached.items():
        if entry is not None and sections[name]["kind"] == "dataset":
            ds_rows, scores[name] = entry["payload"]
            rows += ds_rows
            y = scores[name]["y"]
            firsts = {m: v[0]["p"] for m, v in scores[name]["preds"].items()}
            reliability_plot(y, firsts, plots / f"reliability_{name}.png")
            roc_pr_plots(y, firsts, str(plots / name))
    results = pd.DataFrame(rows)
    if not results.empty:
        add_oracle_ratio(results)
    boot = bootstrap_table(
        scores, models=protocol["models"], references=protocol["references"], draws=draws
    )
    ablation = cached["ablations"]["payload"] if cached.get("ablations") else pd.DataFrame()
    fairness = (
        fairness_table(scores, results=results, spec=protocol["fairness"])
        if protocol["fairness"]["dataset"] in scores
        else pd.DataFrame()
    )
    blocks, study_rows = [], []
    for key in protocol["studies"]:
        parts = [
            cached[n]["payload"]
            for n, section in sections.items()
            if section.get("study") == key and cached.get(n) is not None
        ]
        if not parts:
            continue
        study = {
            **parts[0],
            "rows": [r for p in parts for r in p["rows"]],
            "scores": {k: v for p in parts for k, v in p["scores"].items()},
        }
        sboot = study_bootstrap(study, draws=draws)
        blocks.append(study_markdown(key, study, sboot))
        study_rows += [{"study": key, **r} for r in sboot.to_dict("records")]
    done = [
        {"section": n, "minutes": e["minutes"], "commit": e["commit"]}
        for n, e in cached.items()
        if e is not None
    ]
    meta = {
        "quick": quick,
        "seeds": protocol["seeds"],
        "draws": draws,
        "minutes": sum(s["minutes"] for s in done),
        "cpus": os.cpu_count(),
        "datasets": [v["facts"] for v in scores.values()],
        "ablation_title": protocol["ablations"]["title"],
        "sections": done,
        "absent": list(absent),
    }
    results.to_csv(out / "benchmark.csv", index=False)
    boot.to_csv(out / "bootstrap.csv", index=False)
    ablation.to_csv(out / "ablations.csv", index=False)
    fairness.to_csv(out / "fairness.csv", index=False)
    pd.DataFrame(study_rows).to_csv(out / "studies.csv", index=False)
    payload = {
        "meta": meta,
        "results": results.to_dict("records"),
        "bootstrap": boot.to_dict("records"),
        "ablations": ablation.to_dict("records"),
        "fairness": fairness.to_dict("records"),
        "studies": study_rows,
    }
    (out / "benchmark.json").write_text(json.dumps(payload, indent=1, default=_jsonable))
    gaps = largest_gaps(fairness) if not fairness.empty else pd.DataFrame()
    markdown = results_markdown(
        results, boot=boot, ablation=ablation, gaps=gaps, meta=meta, studies=blocks
    )
    (out / "results.md").write_text(markdown)
    return markdown


if __name__ == "__main__":
    main()

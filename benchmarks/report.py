"""The README's generated sections: the benchmark tables and the performance tables.

This is the only code that writes between README markers, so a marker's format and a
table's layout each have one home. It imports nothing from the runners: they call it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from seqchurn.io import atomic_write

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = Path(__file__).resolve().parent / "results"
BENCHMARK_MARKERS = ("<!-- benchmark:start -->", "<!-- benchmark:end -->")
# The performance tables of benchmarks/tensorize.py, predict.py, train.py and serve.py, by name.
PERFORMANCE = ("tensorize", "predict", "train", "serve", "faults")

_TABLE_METRICS = (
    ("auroc", "AUROC"),
    ("ap_churners", "AP churn"),
    ("ap_returners", "AP return"),
    ("brier", "Brier"),
    ("log_loss", "log loss"),
    ("ece", "ECE"),
    ("calib_large", "mean p − rate"),
    ("lift10", "lift@10%"),
    ("cindex", "C-index"),
    ("ibs", "IBS"),
    ("td_auc_30", "AUC 30d"),
    ("td_auc_90", "AUC 90d"),
    ("td_auc_180", "AUC 180d"),
    ("uno_c", "Uno's C"),
    ("oracle_ratio", "oracle ratio"),
)


# -- markers -------------------------------------------------------------------------------------
def _marker_span(path: Path, lines: list[str], markers: tuple[str, str]) -> tuple[int, int]:
    begin, end = markers
    found = {m: [i for i, line in enumerate(lines) if line.strip() == m] for m in markers}
    for marker, where in found.items():
        if len(where) != 1:
            raise ValueError(
                f"{path}: marker line {marker!r} found {len(where)} times, expected once"
            )
    i, j = found[begin][0], found[end][0]
    if j < i:
        raise ValueError(f"{path}: end marker {end!r} comes before begin marker {begin!r}")
    return i, j


def check_markers(path: str | Path, markers: tuple[str, str]) -> None:
    """Raise ValueError unless each marker is alone on exactly one line of `path`, begin first.

    A runner calls this before hours of work, so a broken README fails at once.
    """
    path = Path(path)
    _marker_span(path, path.read_text().splitlines(), markers)


def replace_between_markers(path: str | Path, markers: tuple[str, str], text: str) -> Path:
    """Replace the lines between the two marker lines of `path` with `text`, atomically.

    The markers stay; each must be alone on exactly one line, begin before end.
    """
    path = Path(path)
    lines = path.read_text().splitlines(keepends=True)
    i, j = _marker_span(path, lines, markers)
    body = text if text.endswith("\n") or not text else text + "\n"
    new = "".join(lines[: i + 1]) + body + "".join(lines[j:])
    return atomic_write(path, lambda tmp: Path(tmp).write_text(new))


# -- cells ---------------------------------------------------------------------------------------
def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _num(x, digits: int = 4, sign: bool = False) -> str:
    if x is None or pd.isna(x):
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def mean_std_cell(values: pd.Series, digits: int = 4) -> str:
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return "–"
    if len(v) == 1:
        return _num(float(v.iloc[0]), digits)
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def interval_cell(mean, lo, hi) -> str:
    text = f"{_num(mean, sign=True)} [{_num(lo, sign=True)}, {_num(hi, sign=True)}]"
    excludes_zero = not any(pd.isna(v) for v in (lo, hi)) and (lo > 0 or hi < 0)
    return f"**{text}**" if excludes_zero else text


# -- the benchmark section -----------------------------------------------------------------------
def _results_tables(results: pd.DataFrame, meta: dict) -> list[str]:
    info = {d.get("dataset"): d for d in meta.get("datasets", []) if isinstance(d, dict)}
    out = []
    for dataset in results["dataset"].drop_duplicates():
        part = results[results["dataset"] == dataset]
        metrics = [(c, h) for c, h in _TABLE_METRICS if c in part.columns and part[c].notna().any()]
        rows = []
        for method in part["method"].drop_duplicates():
            runs = part[part["method"] == method]
            time_s = mean_std_cell(runs["seconds"], 1) if "seconds" in runs else "–"
            split = [mean_std_cell(runs[c], 1) if c in runs else "–" for c in ("fit_s", "test_s")]
            if split != ["–", "–"]:
                time_s += f" ({split[0]} / {split[1]})"
            rows.append(
                [method, str(len(runs))] + [mean_std_cell(runs[c]) for c, _ in metrics] + [time_s]
            )
        d = info.get(dataset, {})
        facts = [
            f"{d['n_test']:,} test customers" if "n_test" in d else None,
            f"churn rate {d['churn_rate']:.3f}" if "churn_rate" in d else None,
            f"test cutoff {d['test_cutoff']}" if "test_cutoff" in d else None,
            f"IBS over days 0–{d['ibs_days']:g}" if (d.get("ibs_days") or 0) > 0 else None,
        ]
        facts = ", ".join(f for f in facts if f)
        out.append(f"#### {dataset}" + (f" ({facts})" if facts else ""))
        out.append(
            table(["method", "runs"] + [h for _, h in metrics] + ["seconds (fit / test)"], rows)
        )
    return out


def _per_cutoff_rows(part: pd.DataFrame, keyed: dict, pairs: list, names: list) -> list[list]:
    metrics = list(part["metric"].drop_duplicates())
    rows = []
    for m, ref in pairs:
        for i, name in enumerate(names):
            cells = []
            for k in metrics:
                pc = keyed[(m, ref, k)].per_cutoff if (m, ref, k) in keyed else None
                ok = isinstance(pc, (list, tuple)) and len(pc) > i
                cell = interval_cell(pc[i]["mean_diff"], pc[i]["lo"], pc[i]["hi"]) if ok else "–"
                cells.append(cell)
            rows.append([m, ref, name] + cells)
    return rows


def _bootstrap_tables(boot: pd.DataFrame, results: pd.DataFrame) -> list[str]:
    out = []
    for group in boot["group"].drop_duplicates():
        part = boot[boot["group"] == group]
        metrics = list(part["metric"].drop_duplicates())
        keyed = {(r.method, r.reference, r.metric): r for r in part.itertuples()}
        pairs = list(dict.fromkeys(zip(part["method"], part["reference"])))
        rows = [
            [m, ref]
            + [
                interval_cell(
                    keyed[(m, ref, k)].mean_diff, keyed[(m, ref, k)].lo, keyed[(m, ref, k)].hi
                )
                if (m, ref, k) in keyed
                else "–"
                for k in metrics
            ]
            for m, ref in pairs
        ]
        out.append(f"#### {group}: method − reference, pooled over its test cutoffs")
        out.append(table(["method", "reference"] + metrics, rows))
        names = (
            list(results.loc[results["group"] == group, "dataset"].drop_duplicates())
            if "group" in results
            else []
        )
        n_cut = (
            max((len(v) for v in part["per_cutoff"] if isinstance(v, (list, tuple))), default=0)
            if "per_cutoff" in part
            else 0
        )
        if n_cut > 1:
            names = names if len(names) == n_cut else [f"cutoff {i + 1}" for i in range(n_cut)]
            out.append(f"#### {group}: per test cutoff")
            out.append(
                table(
                    ["method", "reference", "test set"] + metrics,
                    _per_cutoff_rows(part, keyed=keyed, pairs=pairs, names=names),
                )
            )
    return out


def _ablation_table(ablation: pd.DataFrame) -> str:
    ref = ablation.loc[ablation["ablation"] == "default", "auroc"]
    names = ("auroc", "ap_returners", "brier", "ece", "calib_large", "cindex", "ibs")
    cols = [c for c in names if c in ablation]
    rows = [
        [r["ablation"]]
        + [_num(r[c]) for c in cols]
        + ([_num(r["auroc"] - ref.iloc[0], sign=True)] if len(ref) else [])
        + [_num(r.get("seconds"), 1)]
        for _, r in ablation.iterrows()
    ]
    header = ["ablation"] + cols + (["Δ AUROC vs default"] if len(ref) else []) + ["seconds"]
    return table(header, rows)


def _gaps_table(gaps: pd.DataFrame) -> str:
    rows = [
        [
            r["group_column"],
            r["metric"],
            _num(r["gap"]),
            f"{r['low_group']} ({_num(r['low_value'])})",
            f"{r['high_group']} ({_num(r['high_value'])})",
        ]
        for _, r in gaps.iterrows()
    ]
    return table(["grouping", "metric", "gap", "lowest", "highest"], rows)


def results_markdown(
    results: pd.DataFrame,
    boot: pd.DataFrame,
    ablation: pd.DataFrame,
    gaps: pd.DataFrame,
    meta: dict,
    studies: Sequence[str] = (),
) -> str:
    """The README results section: per-dataset metrics, bootstrap intervals, ablations, gaps.

    Args:
        results: one row per (dataset, method, seed): score_table columns plus dataset, group,
            seed, seconds, fit_s, test_s and optionally oracle_ratio.
        boot: one row per (group, method, reference, metric) with mean_diff, lo, hi, per_cutoff.
        ablation: score_table columns plus `ablation` and `seconds` (may be empty).
        studies: the studies' blocks (benchmarks/studies.py), after the ablations.
        gaps: `fairness.largest_gaps` output (may be empty).
        meta: seeds, draws, minutes, cpus, quick, `datasets` (dataset, n_test, churn_rate,
            test_cutoff, optionally ibs_days) and optionally `ablation_title`.
    """
    seeds = ", ".join(str(s) for s in meta.get("seeds", []))
    head = (
        f"Seeds {seeds or '–'}; {meta.get('draws', '–')} bootstrap draws; "
        f"{_num(meta.get('minutes'), 1)} min on {meta.get('cpus', '–')} CPUs"
    )
    parts = [head + (" (quick run: small data, not the protocol)." if meta.get("quick") else ".")]
    if meta.get("sections"):
        runs = ", ".join(
            f"{s['section']} {s['minutes']:.1f} min at {s['commit']}" for s in meta["sections"]
        )
        parts.append(f"Sections (each cached, `--only NAME` reruns one): {runs}.")
    if meta.get("absent"):
        parts.append(f"**Not run yet** (absent from every table): {', '.join(meta['absent'])}.")
    parts.append(
        "Mean ± standard deviation over seeds (runs = seeds). AUROC, AP, lift, C-index and "
        "oracle ratio: higher is better; Brier, log loss and ECE (15 bins): lower is better. "
        "Time to churn, for the methods with a survival curve at the bin edges (the models, "
        "cox, km, bgnbd): IPCW integrated Brier score (IBS, lower is better) over the bins the "
        "test snapshot observes, time-dependent AUC at 30/90/180 days and Uno's C of the "
        "restricted mean time (higher is better); – where a horizon is past what the snapshot "
        "observes."
    )
    if results is not None and not results.empty:
        parts += _results_tables(results, meta)
    if boot is not None and not boot.empty:
        parts.append(
            "### Paired customer-level bootstrap\n\nDifference of means and 95% interval; bold "
            "where it excludes 0. For Brier and ibs, negative means the method beats the "
            "reference."
        )
        parts += _bootstrap_tables(boot, results if results is not None else pd.DataFrame())
    if ablation is not None and not ablation.empty:
        title = meta.get("ablation_title", "LSTM, one seed, cdnow@1997-12-31")
        parts.append(f"### Ablations ({title})")
        parts.append(_ablation_table(ablation))
    parts += list(studies)
    if gaps is not None and not gaps.empty:
        parts.append("### Fairness: largest gap between groups")
        parts.append(_gaps_table(gaps))
    return "\n\n".join(parts) + "\n"


# -- the performance sections --------------------------------------------------------------------
def performance_markers(name: str) -> tuple[str, str]:
    """The marker pair of the performance table `name` (one of PERFORMANCE)."""
    if name not in PERFORMANCE:
        raise ValueError(f"unknown performance section {name!r}; choose one of {PERFORMANCE}")
    return (f"<!-- perf-{name}:start -->", f"<!-- perf-{name}:end -->")


def cpu_note() -> str:
    """The machine a figure was measured on, in a few words."""
    import os
    import platform

    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpus} CPU cores ({platform.machine()}), {gpu}, torch {torch.__version__}"


def peak_rss_mb() -> float:
    """This process's own peak resident memory in MB: Linux's VmHWM, which starts afresh at exec.

    Not ru_maxrss: Linux carries the high-water mark of the memory a child replaces at exec
    into it, so a child started by a large parent reports at least the parent's peak.
    """
    import resource

    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_section(
    name: str, lead: str, header: Sequence[str], rows: Sequence[Sequence[str]], path=README
) -> Path:
    """Write one performance table, under its lead sentence, between its README markers."""
    return replace_between_markers(
        path, performance_markers(name), lead + "\n\n" + table(header, rows) + "\n"
    )

"""The benchmark: a smoke run end to end, its protocol, the README report, and no test-period
data tunes anything."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import stat
import subprocess
import sys
from types import SimpleNamespace

import hydra
import pandas as pd
import pytest

from conftest import ROOT
from seqchurn.data.labels import to_day

MARKS = ("<!-- s -->", "<!-- e -->")


@pytest.fixture
def bench(monkeypatch):
    """benchmarks/'s modules, imported as `python benchmarks/run.py` imports its siblings."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return SimpleNamespace(
        report=importlib.import_module("report"), protocol=importlib.import_module("protocol")
    )


def test_quick_benchmark_writes_results_and_leaves_the_readme_alone(tmp_path):
    readme = hashlib.sha256((ROOT / "README.md").read_bytes()).hexdigest()
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "run.py"),
        "--quick",
        "--only",
        "synthetic-bgnbd",
        "--models",
        "logistic",
        "--draws",
        "50",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = pd.read_csv(tmp_path / "benchmark.csv")
    expected = {
        "logistic",
        "logistic_rfm",
        "recency",
        "bgnbd",
        "logreg_summary",
        "rf_summary",
        "lgbm_summary",
        "cox",
        "km",
        "lgbm_aggregates",
        "oracle",
    }
    assert expected <= set(results["method"])
    assert results[["auroc", "brier", "cindex", "oracle_ratio"]].notna().all().all()
    # The synthetic test snapshot's labels end at C + H: it observes tau up to 0 days only, so
    # Uno's C is there for the methods with a curve and IBS and the AUCs at 30+ days are not.
    curves = results["method"].isin(["logistic", "bgnbd", "cox", "km"])
    assert results.loc[curves, "uno_c"].notna().all() and results["ibs"].isna().all()
    assert results.loc[~curves, "uno_c"].isna().all()
    assert results.loc[results["method"] == "oracle", "oracle_ratio"].iloc[0] == pytest.approx(1.0)
    boot = pd.read_csv(tmp_path / "bootstrap.csv")
    # cox and km are references on IBS only, which this snapshot cannot observe: left out.
    assert set(boot["reference"]) == {
        "logistic_rfm",
        "bgnbd",
        "logreg_summary",
        "lgbm_summary",
        "lgbm_aggregates",
    }
    assert (boot["lo"] <= boot["mean_diff"]).all() and (boot["mean_diff"] <= boot["hi"]).all()
    assert json.loads((tmp_path / "benchmark.json").read_text())["meta"]["quick"] is True
    assert "| logistic |" in (tmp_path / "results.md").read_text()
    assert list((tmp_path / "plots").glob("reliability_*.png")) and list(
        (tmp_path / "plots").glob("*_roc.png")
    )
    assert hashlib.sha256((ROOT / "README.md").read_bytes()).hexdigest() == readme
    # the section is cached, under the spec that made it; --list names every section
    assert (tmp_path / "cache" / "synthetic-bgnbd.pkl").exists()
    listed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert {"synthetic-bgnbd", "ablations", "sequence:synthetic-sequence"} <= set(names)


def test_cached_sections_merge_and_another_spec_is_not_reused(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    run = importlib.import_module("run")
    spec = {"dataset": {"name": "x"}, "models": ["lstm"], "seeds": [0]}
    run.save_section(tmp_path, "x@2020-01-01", spec, payload={"a": 1}, minutes=0.5)
    entry = run.load_section(tmp_path, "x@2020-01-01", spec)
    assert entry["payload"] == {"a": 1} and entry["minutes"] == 0.5 and entry["commit"]
    assert run.load_section(tmp_path, "x@2020-01-01", {**spec, "seeds": [0, 1]}) is None
    assert run.load_section(tmp_path, "y", spec) is None
    bench_protocol = importlib.import_module("protocol").load_protocol(quick=False)
    sections = run.sections_of(bench_protocol)
    kinds = {name: s["kind"] for name, s in sections.items()}
    assert kinds["cdnow@1997-12-31"] == "dataset" and kinds["ablations"] == "ablations"
    studies = {sections[k]["study"] for k, v in kinds.items() if v == "study"}
    assert studies == set(bench_protocol["studies"]) and "sequence:cdnow@1997-12-31" in kinds


@pytest.mark.parametrize(
    "overrides",
    [
        ["data=cdnow"],
        ["data=cdnow", "data.test_cutoff=1997-09-30", "data.train_cutoffs=null"],
        ["data=synthetic"],
    ],
    ids=["cdnow@1997-12-31", "cdnow@1997-09-30", "synthetic"],
)
def test_early_stopping_tiers_and_tuning_see_only_the_training_window(make_cfg, overrides):
    cfg = make_cfg(overrides)
    # everything a run selects on is a validation metric
    assert cfg.optimized_metric.startswith("val/")
    for cb in cfg.callbacks.values():
        if cb is not None and "monitor" in cb:
            assert cb.monitor.startswith("val/")
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    test_cutoff, horizon = int(dm.test_cutoff), int(dm.hparams.horizon_days)
    assert test_cutoff == to_day(cfg.data.test_cutoff)
    for split in ("train", "val"):  # early stopping, recalibration, tiers and tree tuning use these
        snaps = dm.snapshots[split]
        assert (snaps["cutoff"] + horizon <= test_cutoff).all(), split
        # a snapshot's tau never reaches past the test cutoff either
        assert (snaps["cutoff"] + snaps["tau"] + horizon <= test_cutoff).all(), split
    assert not set(dm.snapshots["train"]["user_id"]) & set(dm.snapshots["val"]["user_id"])


def test_replace_between_markers(bench, tmp_path):
    replace = bench.report.replace_between_markers
    readme = tmp_path / "README.md"
    readme.write_text("# title\n<!-- s -->\nold\nlines\n<!-- e -->\ntail\n")
    os.chmod(readme, 0o644)
    replace(readme, MARKS, "new table")
    assert readme.read_text() == "# title\n<!-- s -->\nnew table\n<!-- e -->\ntail\n"
    assert stat.S_IMODE(readme.stat().st_mode) == 0o644
    replace(readme, MARKS, "")
    assert readme.read_text() == "# title\n<!-- s -->\n<!-- e -->\ntail\n"
    with pytest.raises(ValueError, match="<!-- x -->"):
        replace(readme, ("<!-- x -->", "<!-- e -->"), "t")
    readme.write_text("<!-- e -->\n<!-- s -->\n")
    with pytest.raises(ValueError, match="before"):
        replace(readme, MARKS, "t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]  # no temporary file left


def test_results_markdown_tables(bench):
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
                    "ibs": 0.08,
                    "td_auc_90": 0.7,
                    "td_auc_180": float("nan"),
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
                "ibs": float("nan"),
                "td_auc_90": float("nan"),
                "td_auc_180": float("nan"),
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
                "ibs_days": 90.0,
            }
        ],
    }
    md = bench.report.results_markdown(results, boot=boot, ablation=ablation, gaps=gaps, meta=meta)
    assert "Seeds 0, 1, 2; 1000 bootstrap draws; 42.0 min on 2 CPUs." in md
    assert (
        "#### cdnow@1997-12-31 (23,570 test customers, churn rate 0.838, test cutoff 1997-12-31, "
        "IBS over days 0–90)" in md
    )
    # The survival columns render where some method has them; a column of NaN only does not.
    assert "| method | runs | AUROC | Brier | IBS | AUC 90d | seconds (fit / test) |" in md
    assert (
        "| lstm | 3 | 0.8100 ± 0.0100 | 0.1000 ± 0.0000 | 0.0800 ± 0.0000 | 0.7000 ± 0.0000 | "
        "10.0 ± 0.0 (8.0 ± 0.0 / 1.0 ± 0.0) |" in md
    )
    assert "| logistic_rfm | 1 | 0.7900 | 0.1100 | – | – | 0.5 |" in md
    assert "| lstm | logistic_rfm | **+0.0150 [+0.0040, +0.0250]** |" in md
    assert "| lstm | logistic_rfm | cdnow@1997-09-30 | +0.0100 [-0.0100, +0.0200] |" in md
    assert "| no summary features | 0.7900 | -0.0100 | 4.0 |" in md
    assert "| tenure_tertile | auroc | 0.0500 | low (0.7500) | high (0.8000) |" in md
    none = pd.DataFrame()
    empty = bench.report.results_markdown(results, boot=none, ablation=none, gaps=none, meta={})
    assert "#### cdnow@1997-09-30" in empty
    assert "Paired customer-level bootstrap" not in empty and "Ablations" not in empty


def test_readme_has_the_markers_and_only_report_py_writes_between_them(bench):
    perf = [bench.report.performance_markers(name) for name in bench.report.PERFORMANCE]
    for markers in (bench.report.BENCHMARK_MARKERS, *perf):
        bench.report.check_markers(ROOT / "README.md", markers)
    writers = {
        str(f.relative_to(ROOT))
        for folder in ("src", "scripts", "benchmarks")
        for f in (ROOT / folder).rglob("*.py")
        if ":start -->" in f.read_text()
    }
    assert writers == {"benchmarks/report.py"}


def test_check_markers_refuses_a_missing_or_repeated_marker(bench, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("<!-- s -->\n<!-- s -->\n<!-- e -->\n")
    with pytest.raises(ValueError, match="2 times"):
        bench.report.check_markers(readme, MARKS)
    readme.write_text("<!-- s -->\n")
    with pytest.raises(ValueError, match="0 times"):
        bench.report.check_markers(readme, MARKS)


def test_write_section_puts_a_table_between_its_markers_only(bench, tmp_path):
    readme = tmp_path / "README.md"
    begin, end = bench.report.performance_markers("predict")
    readme.write_text(f"intro\n{begin}\nold\n{end}\nafter\n")
    bench.report.write_section("predict", "Lead.", ["a", "b"], [["1", "2"]], path=readme)
    assert (
        readme.read_text()
        == f"intro\n{begin}\nLead.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n{end}\nafter\n"
    )
    with pytest.raises(ValueError, match="unknown performance section"):
        bench.report.performance_markers("nope")


def test_merge_overrides_keeps_the_last_value_of_a_key(bench):
    merged = bench.protocol.merge_overrides(["data=cdnow", "seed=0"], ["seed=1", "+x=2"], ["x=3"])
    assert merged == ["data=cdnow", "seed=1", "x=3"]


def test_quick_protocol_is_the_full_one_made_small(bench):
    full = bench.protocol.load_protocol(quick=False)
    quick = bench.protocol.load_protocol(quick=True)
    assert full["models"] == ["logistic", "lstm", "transformer"] and full["seeds"] == [0, 1, 2]
    assert [d["name"] for d in full["datasets"]] == [
        "cdnow@1997-12-31",
        "cdnow@1997-09-30",
        "synthetic-bgnbd",
        "synthetic-sequence",
        "git-pytest@2026-03-31",
        "git-pytest@2025-12-31",
        "git-pytest@2025-09-30",
        "git-pytest@2025-06-30",
    ]
    assert (quick["seeds"], quick["draws"], len(quick["ablations"]["variants"])) == ([0], 200, 3)
    syn = next(d for d in quick["datasets"] if d["name"] == "synthetic-bgnbd")
    assert syn["overrides"] == ["data=synthetic", "data.synthetic.n_users=2000"]
    assert "trainer.max_epochs=2" in quick["overrides"]
    assert "trainer.max_epochs=2" not in full["overrides"]
    assert set(full["references"]) == {
        "logistic_rfm",
        "bgnbd",
        "logreg_summary",
        "lgbm_summary",
        "cox",
        "km",
        "lgbm_aggregates",
    }
    assert full["references"]["cox"] == ("ibs",) and "ibs" in full["references"]["bgnbd"]


def test_git_pytest_protocol_is_fixed_and_reads_its_file_from_the_repository(bench):
    """H = 90, the last four quarter ends with C + H <= the log's last day, pooled; the file
    is outside the repository, resolved from it (not from where the runner starts)."""
    full = bench.protocol.load_protocol(quick=False)
    git = [d for d in full["datasets"] if d["group"] == "git-pytest-h90"]
    path = (ROOT / ".." / "shared" / "datasets" / "git_pytest" / "events.csv.gz").resolve()
    cutoffs = []
    for d in git:
        assert d["path"] == str(path) and f"data.path={path}" in d["overrides"]
        cutoffs += [o.split("=", 1)[1] for o in d["overrides"] if o.startswith("data.test_cutoff")]
    last_day = to_day("2026-08-20")
    ends = pd.date_range("2024-01-01", "2026-08-20", freq="QE").strftime("%Y-%m-%d")
    assert cutoffs == [c for c in ends if to_day(c) + 90 <= last_day][::-1][:4]
    cfg = bench.protocol.compose_cfg(git[0]["overrides"], ROOT)
    assert cfg.data.horizon_days == 90 and cfg.data.train_cutoffs is None


def test_every_run_of_the_protocol_composes(bench, tmp_path):
    """A mistyped override fails here, not hours into the full benchmark."""
    protocol = bench.protocol.load_protocol(quick=False)
    runs = [
        d["overrides"] + [f"model={m}"] for d in protocol["datasets"] for m in protocol["models"]
    ]
    runs += [v["overrides"] for v in protocol["ablations"]["variants"]]
    datasets = {d["name"]: d for d in protocol["datasets"]}
    for study in protocol["studies"].values():
        for name in study["datasets"]:
            runs += [
                bench.protocol.merge_overrides(
                    datasets[name]["overrides"], arm.get("overrides", [])
                )
                for arm in study["arms"].values()
            ]
    for overrides in runs:
        cfg = bench.protocol.compose_cfg(overrides + protocol["overrides"], tmp_path)
        assert cfg.logger is None and cfg.paths.output_dir == str(tmp_path)


def test_the_benchmark_imports_no_script_and_leaves_sys_path_alone():
    for f in (ROOT / "benchmarks").glob("*.py"):
        text = f.read_text()
        assert "sys.path" not in text, f.name
        assert "from scripts" not in text and "import scripts" not in text, f.name


def test_train_benchmark_pads_without_changing_predictions_and_the_attention_is_fused(
    monkeypatch,
):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    tb = importlib.import_module("train")
    ds = tb.synthetic_dataset(tb.clickstream_lengths(48).clip(max=32).astype("int64"))
    for name in tb.MODELS:
        model = tb.build(name, "cpu")
        assert tb.max_gap(model, ds, 32, "cpu") < 1e-5, name
        runs = {
            mode: tb.epoch(model, ds, mode, 32, batch_size=16, budget_s=600, device="cpu")
            for mode in ("bucketed", "pad-to-max")
        }
        assert all(r["share_timed"] == 1.0 and r["rows_per_s"] > 0 for r in runs.values())
        assert runs["bucketed"]["padding_share"] < runs["pad-to-max"]["padding_share"]
    # attention dropout would send the Transformer to the unfused "math" kernel
    kernel = tb.attention_kernel(tb.build("transformer", "cpu"), ds, "cpu")
    assert "scaled_dot_product" in kernel and "math" not in kernel, kernel


def test_gpu_benchmark_runs_its_steps_on_the_cpu_without_cuda(tmp_path):
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--users", "96", "--length", "24"]
    cmd += ["--batch", "32", "--check", "40", "--repeats", "1", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    import torch

    assert result["gpu_measured"] == torch.cuda.is_available()
    assert result["finite"] and result["users_per_s"] > 0 and result["checked_users"] == 40
    # bf16 autocast against float32 with the same weights and inputs: close, not equal
    assert 0 < result["max_abs_p_gap_vs_cpu_fp32"] < 2e-2, result

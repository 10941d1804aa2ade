"""Composition, fast_dev_run, determinism, checkpoint round trip and the CLI contract of train."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT
from seqchurn.train import train

from seqchurn.data.sequences import INDEX
from seqchurn.module import ChurnModule

MODELS = ["logistic", "lstm", "transformer"]
SMALL = [
    "data=synthetic",
    "data.synthetic.n_users=600",
    "logger=csv",
    "trainer.enable_progress_bar=false",
]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(
    "data, source",
    [
        ("cdnow", "cdnow"),
        ("events", "events"),
        ("synthetic", "simulated"),
        ("synthetic_sequence", "simulated"),
    ],
)
def test_every_config_composes(make_cfg, model, data, source):
    extra = ["data.path=x.csv"] if data == "events" else []
    cfg = make_cfg([f"model={model}", f"data={data}", *extra])
    assert cfg.model.encoder == model and cfg.data.source == source
    assert cfg.data.horizon_days == 90 and cfg.data.split_seed == 0  # from data/common.yaml


@pytest.mark.parametrize(
    "group",
    [
        "trainer=gpu",
        "trainer=ddp",
        "logger=csv",
        "debug=fdr",
        "debug=overfit",
        "debug=limit",
        "experiment=cdnow_lstm",
    ],
)
def test_other_groups_compose(make_cfg, group):
    make_cfg([group])


@pytest.mark.parametrize("model", MODELS)
def test_fast_dev_run(make_cfg, model):
    metrics, objects = train(make_cfg([f"model={model}", "debug=fdr", *SMALL]))
    assert "test/auroc" in metrics and "test/cindex" in metrics
    assert (
        objects["datamodule"].preprocessing_state()["bin_edges"] == objects["datamodule"].bin_edges
    )
    # the head started from the training rows' pooled hazards, one per finite bin edge
    prior = objects["model"].hparams.hazard_prior
    assert prior == objects["datamodule"].hazard_prior
    assert len(prior) == len(objects["datamodule"].bin_edges) and 0 < prior[0] < 1


def test_an_encoder_outside_the_package_trains_through_config_alone(make_cfg):
    """The 'add an encoder' recipe: a dotted path in model.encoder, no edit to the package."""
    overrides = ["model=lstm", "model.encoder=toy_encoder.MeanPoolEncoder", "debug=fdr", *SMALL]
    cfg = make_cfg([*overrides, "~model.encoder_kwargs", "+model.encoder_kwargs.d_model=4"])
    metrics, objects = train(cfg)
    assert type(objects["model"].encoder).__name__ == "MeanPoolEncoder"
    assert objects["model"].encoder.out_dim == 4 + objects["model"].encoder.user.out_dim
    assert "test/auroc" in metrics


def _fit(make_cfg, model="logistic", extra=()):
    return train(make_cfg([f"model={model}", *SMALL, "trainer.max_epochs=2", *extra]))


def test_same_seed_same_metrics(make_cfg):
    first, _ = _fit(make_cfg, "lstm")
    again, _ = _fit(make_cfg, "lstm")
    for key in ("val/auroc", "test/auroc", "test/cindex", "test/brier"):
        assert first[key] == again[key], key


def test_checkpoint_reload_gives_same_predictions(make_cfg):
    metrics, objects = _fit(make_cfg, "transformer")
    ckpt = objects["best_ckpt"]
    assert os.path.basename(ckpt) == "best.ckpt" and os.path.exists(ckpt)
    dm = objects["datamodule"]
    loaded = ChurnModule.load_from_checkpoint(ckpt, map_location="cpu").eval()
    assert loaded.preprocessing["preprocessor"]["vocab"] == dm.preprocessor.vocab
    trained = objects["model"].eval()
    batch = dm.dataset("test")[np.arange(len(dm.dataset("test")))]
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), trained(batch))


def test_padding_and_bucketing_change_no_prediction(make_cfg):
    _, objects = _fit(make_cfg, "lstm", ["trainer.max_epochs=1"])
    model, ds = objects["model"].eval(), objects["datamodule"].dataset("test")
    rows = np.arange(len(ds))
    with torch.no_grad():
        alone = torch.cat([model(ds[[r]]) for r in rows[:50]])  # no padding at all
        together = model(ds[rows])[:50]  # padded to the longest sequence
        bucketed = torch.zeros(len(ds), together.shape[1])
        for batch in objects["datamodule"].test_dataloader():
            bucketed[batch[INDEX]] = model(batch)
    torch.testing.assert_close(alone, together, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bucketed[:50], together, atol=1e-5, rtol=1e-5)


def _cli(tmp_path, *args):
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "train.py"),
        f"hydra.run.dir={run_dir}",
        "logger=csv",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    return proc, run_dir


def _write_log(path, **columns):
    base = {"user_id": ["a", "a", "b"], "timestamp": ["2020-01-01", "2020-03-01", "2020-02-01"]}
    base.update(columns)
    pd.DataFrame(base).to_csv(path, index=False)
    return path


BAD_INPUTS = {
    "missing_file": (lambda p: p / "nope.csv", "file not found"),
    "missing_column": (
        lambda p: _write_log(p / "log.csv", amount=[1, 2, 3]),
        "missing from the file",
    ),
    "bad_timestamp": (
        lambda p: _write_log(p / "log.csv", timestamp=["2020-01-01", "soon", "2020-02-01"]),
        "unparsable timestamp",
    ),
    "negative_amount": (lambda p: _write_log(p / "log.csv", amount=[1, -1, 2]), "negative amount"),
    "null_user": (lambda p: _write_log(p / "log.csv", user_id=["a", None, "b"]), "null user_id"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_no_output(tmp_path, case):
    make_path, message = BAD_INPUTS[case]
    path = make_path(tmp_path)
    extra = ["data.columns.timestamp=InvoiceDate"] if case == "missing_column" else []
    proc, run_dir = _cli(tmp_path, "data=events", f"data.path={path}", *extra)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and message in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.test_cutoff=2030-01-01", "outside the data"),
        ("data.test_cutoff=1997-03-01", "no month-end training cutoff"),
        ("data.train_fraction=0", "data.train_fraction must be above 0"),
        ("data.train_fraction=1.5", "data.train_fraction must be a number in [0, 1]"),
        ("data.cutoff_rule=weekly", "data.cutoff_rule must be one of month_end, aligned"),
        ("data.train_windows=[0]", "data.train_windows holds positive numbers of days"),
    ],
)
def test_bad_cutoff_exits_2(tmp_path, override, message):
    proc, run_dir = _cli(tmp_path, "data=cdnow", "data.train_cutoffs=null", override)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not run_dir.exists()


def test_sweep_runs_each_job(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "train.py"),
        "-m",
        "model=logistic,lstm",
        "data=synthetic",
        "data.synthetic.n_users=300",
        "debug=fdr",
        "logger=csv",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 2 and "model=logistic" in jobs[0] and "model=lstm" in jobs[1]
    assert all((sweep / j / "checkpoints").is_dir() for j in jobs)


def test_early_cutoffs_with_one_or_two_users_do_not_end_the_run(tmp_path, make_cfg):
    # Two customers start months before everyone else: the first month-end cutoffs hold only
    # them, so metrics there (the survival check's C-index) are undefined: NaN, never a crash.
    from seqchurn.simulate import bgnbd_log

    events = bgnbd_log(n_users=400, seed=1, start="2020-06-01", horizon_weeks=70).events
    early = pd.DataFrame(
        {
            "user_id": ["e1", "e1", "e2"],
            "timestamp": pd.to_datetime(["2020-01-05", "2020-01-20", "2020-01-09"]),
            "event_type": "purchase",
            "amount": [10.0, 12.0, 8.0],
            "quantity": 1.0,
        }
    )
    path = tmp_path / "log.csv"
    pd.concat([early, events[early.columns]]).to_csv(path, index=False)
    cfg = make_cfg(
        [
            "model=logistic",
            "data=events",
            f"data.path={path}",
            "data.val_fraction=0.5",
            "data.columns.amount=amount",
            "trainer.max_epochs=1",
            "logger=csv",
            "trainer.enable_progress_bar=false",
        ]
    )
    with pytest.warns(UserWarning, match="undefined"):
        metrics, objects = train(cfg)
    cutoffs = objects["datamodule"].snapshots["val"]["cutoff"]
    assert cutoffs.value_counts().min() <= 2 and np.isfinite(metrics["test/auroc"])

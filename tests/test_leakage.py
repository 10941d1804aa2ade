"""No leakage through the split or the scalers: users and events after the test cutoff change nothing."""

import numpy as np
import pandas as pd
import torch

from conftest import compose_cfg
from seqchurn.data.sequences import EVENT_TYPE, MASK, NUMERIC, STATIC, SUMMARY
from seqchurn.datamodule import ChurnDataModule
from seqchurn.simulate import bgnbd_log
from seqchurn.train import train

INPUT_KEYS = (EVENT_TYPE, NUMERIC, MASK, SUMMARY, STATIC)
TEST_CUTOFF = "2021-03-31"


def _logs(tmp_path, n_late: int = 50):
    events = bgnbd_log(n_users=500, seed=3, horizon_weeks=78, start="2020-01-01").events
    events = events[["user_id", "timestamp", "event_type", "amount", "quantity"]]
    rng = np.random.default_rng(0)
    late = pd.DataFrame(
        {
            "user_id": [f"late{i}" for i in rng.integers(0, n_late, 4 * n_late)],
            "timestamp": pd.Timestamp("2021-04-10")
            + pd.to_timedelta(rng.integers(0, 60, 4 * n_late), unit="D"),
            "event_type": "purchase",
            "amount": rng.exponential(30, 4 * n_late).round(2),
            "quantity": 1.0,
        }
    )
    base, enlarged = tmp_path / "base.csv", tmp_path / "enlarged.csv"
    events.to_csv(base, index=False)
    pd.concat([events, late]).to_csv(enlarged, index=False)
    return base, enlarged


def _datamodule(path):
    dm = ChurnDataModule(
        source="events",
        path=str(path),
        test_cutoff=TEST_CUTOFF,
        obs_end="2021-06-29",
        columns={
            "user_id": "user_id",
            "timestamp": "timestamp",
            "event_type": "event_type",
            "amount": "amount",
            "quantity": "quantity",
        },
    )
    dm.setup()
    return dm


def test_users_only_after_the_test_cutoff_change_no_tensor(tmp_path):
    base, enlarged = _logs(tmp_path)
    a, b = _datamodule(base), _datamodule(enlarged)
    for split in ("train", "val", "test"):
        pd.testing.assert_frame_equal(a.snapshots[split], b.snapshots[split])
        rows = np.arange(len(a.dataset(split)))
        ta, tb = a.dataset(split)[rows], b.dataset(split)[rows]
        for key in INPUT_KEYS:
            assert torch.equal(ta[key], tb[key]), (split, key)


def test_retrained_on_the_enlarged_log_gives_identical_test_predictions(tmp_path):
    base, enlarged = _logs(tmp_path)
    preds = []
    for path in (base, enlarged):
        cfg = compose_cfg(
            [
                "model=lstm",
                "data=events",
                f"data.path={path}",
                f"data.test_cutoff={TEST_CUTOFF}",
                "data.obs_end=2021-06-29",
                "data.columns.event_type=event_type",
                "data.columns.amount=amount",
                "data.columns.quantity=quantity",
                "trainer.max_epochs=1",
                "logger=csv",
                "trainer.enable_progress_bar=false",
            ],
            tmp_path / path.stem,
        )
        preds.append(train(cfg)[1]["test_predictions"])
    np.testing.assert_array_equal(preds[0]["index"], preds[1]["index"])
    np.testing.assert_array_equal(preds[0]["p_churn"], preds[1]["p_churn"])


def test_train_fraction_keeps_a_nested_subset_of_training_users_only(make_cfg):
    """A smaller data.train_fraction drops training users only: validation and test rows stay,
    and the users kept at 10% are among those kept at 30%."""
    from hydra.utils import instantiate

    kept = {}
    for fraction in (1.0, 0.3, 0.1):
        cfg = make_cfg(["data=synthetic", f"data.train_fraction={fraction}"])
        dm = instantiate(cfg.data)
        dm.setup()
        kept[fraction] = dm
    full, users = kept[1.0], {f: set(dm.snapshots["train"]["user_id"]) for f, dm in kept.items()}
    assert users[0.1] < users[0.3] < users[1.0]
    assert abs(len(users[0.1]) / len(users[1.0]) - 0.1) < 0.01
    for dm in (kept[0.3], kept[0.1]):
        for split in ("val", "test"):
            pd.testing.assert_frame_equal(dm.snapshots[split], full.snapshots[split])

"""Training cutoffs: the aligned rule, the stacking window chosen on validation, recency weights."""

import numpy as np
import pandas as pd
import pytest

from seqchurn.data.labels import aligned_cutoffs, to_date, to_day
from seqchurn.data.batches import BucketBatchSampler
from seqchurn.data.windows import parse_windows, recency_weights
from seqchurn.datamodule import ChurnDataModule
from seqchurn.errors import DataError
from seqchurn.simulate import bgnbd_log

TEST_CUTOFF = "2023-06-30"
OBS_END = "2023-09-28"


def _log(late: bool = False) -> pd.DataFrame:
    """Four years of BG/NBD customers acquired over the first three (so windows differ)."""
    sim = bgnbd_log(
        n_users=1500, seed=5, horizon_weeks=195, acquisition_weeks=150, start="2020-01-01"
    )
    events = sim.events[["user_id", "timestamp", "event_type", "amount", "quantity"]]
    if late:  # events after the test cutoff, of old and new users, must choose nothing
        rng = np.random.default_rng(1)
        extra = events.sample(400, random_state=2).assign(
            timestamp=pd.Timestamp("2023-07-01") + pd.to_timedelta(rng.integers(0, 80, 400), "D")
        )
        events = pd.concat(
            [events, extra, extra.assign(user_id="new" + extra["user_id"].astype(str))]
        )
    return events


def _datamodule(tmp_path, events, **kwargs) -> ChurnDataModule:
    path = tmp_path / f"log{len(events)}.csv"
    events.to_csv(path, index=False)
    columns = {c: c for c in ("user_id", "timestamp", "event_type", "amount", "quantity")}
    dm = ChurnDataModule(
        source="events",
        path=str(path),
        columns=columns,
        test_cutoff=TEST_CUTOFF,
        obs_end=OBS_END,
        **kwargs,
    )
    dm.setup()
    return dm


def test_the_window_is_chosen_among_distinct_candidates_without_test_period_data(tmp_path):
    windows = [365, 380, 730, "all"]  # 365 and 380 keep the same cutoffs: one candidate
    base = _datamodule(tmp_path, _log(), train_windows=windows)
    late = _datamodule(tmp_path, _log(late=True), train_windows=windows)
    report = base.window
    assert set(report["candidates"]) == {365, 730, "all"}, report
    assert report["chosen"] == min(report["candidates"], key=report["candidates"].get)
    assert late.window == report
    first = min(base.snapshots["train"]["cutoff"])
    assert len(base.train_cutoffs) == report["kept"] and first == base.train_cutoffs[0]
    if report["chosen"] != "all":
        assert base.train_cutoffs[-1] - first <= report["chosen"]
    for split in ("train", "val"):
        pd.testing.assert_frame_equal(base.snapshots[split], late.snapshots[split])
    assert base.preprocessing_state()["train_window"] == report


def test_no_candidates_keep_every_cutoff_and_short_windows_are_skipped(tmp_path):
    events = _log()
    every = _datamodule(tmp_path, events, train_windows=None)
    assert every.window["chosen"] == "all" and every.window["kept"] == len(every.train_cutoffs)
    # 200 days is shorter than the 365-day bin edge: skipped, so only "all" is left
    short = _datamodule(tmp_path, events, train_windows=[200, "all"])
    assert short.window["reason"] == "one distinct candidate"
    assert short.train_cutoffs == every.train_cutoffs and short.bin_edges == every.bin_edges


def test_aligned_cutoffs_end_their_labels_at_the_test_cutoff():
    first, test, horizon = to_day("2020-01-17"), to_day(TEST_CUTOFF), 90
    cutoffs = aligned_cutoffs(first, test, horizon, step_days=30)
    assert cutoffs[-1] + horizon == test
    assert set(np.diff(cutoffs)) == {30}
    assert to_date(cutoffs[0]) >= "2020-03-01" and cutoffs[0] - 30 < to_day("2020-03-01")


def test_aligned_rule_through_the_datamodule(tmp_path):
    dm = _datamodule(tmp_path, _log(), cutoff_rule="aligned", train_windows=None)
    assert dm.train_cutoffs[-1] == to_day(TEST_CUTOFF) - 90
    assert set(dm.snapshots["train"]["cutoff"]) <= set(dm.train_cutoffs)


def test_recency_weights_halve_per_half_life_and_steer_the_sampler():
    cutoffs = np.array([0, 100, 200, 200])
    w = recency_weights(cutoffs, 100)
    np.testing.assert_allclose(w, [0.25, 0.5, 1.0, 1.0])
    assert recency_weights(cutoffs, None) is None
    sampler = BucketBatchSampler(np.ones(4, int), 2, shuffle=True, seed=0, row_weights=w)
    counts = np.zeros(4)
    for epoch in range(400):
        sampler.set_epoch(epoch)
        for batch in sampler:
            np.add.at(counts, batch, 1)
    share = counts / counts.sum()
    np.testing.assert_allclose(share, w / w.sum(), atol=0.02)


@pytest.mark.parametrize(
    "spec, message",
    [([0], "positive numbers of days"), (["last"], "positive numbers of days")],
)
def test_bad_windows_are_refused(spec, message):
    with pytest.raises(DataError, match=message):
        parse_windows(spec)


def test_bad_rule_and_half_life_are_refused():
    with pytest.raises(DataError, match="data.cutoff_rule"):
        ChurnDataModule(cutoff_rule="weekly")
    with pytest.raises(DataError, match="recency_halflife_days"):
        ChurnDataModule(recency_halflife_days=-5)

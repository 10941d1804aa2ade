"""Tensorization: leakage, truncation, out-of-vocabulary ids, bucketing, masks."""

import numpy as np
import pandas as pd
import pytest
import torch

from seqchurn.data.events import clean_events
from seqchurn.data.feature_table import time_channel
from seqchurn.data.labels import activity_mask, make_snapshots
from seqchurn.data.batches import BucketBatchSampler, make_loader
from seqchurn.data.features import summary_chunks, summary_features
from seqchurn.data.ranges import channel_stats, sequence_inputs
from seqchurn.data.sequences import (
    CUTOFF,
    EVENT_TYPE,
    INDEX,
    MASK,
    NUMERIC,
    OOV_ID,
    PAD_ID,
    STATIC,
    SUMMARY,
    Preprocessor,
)
from seqchurn.data.timeline import EventIndex

INPUT_KEYS = (EVENT_TYPE, NUMERIC, MASK, SUMMARY, STATIC)
C = 20_000  # a cutoff day


def random_log(seed: int, n: int = 3000, n_users: int = 150) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    day = C - 400 + rng.integers(0, 700, n)
    raw = pd.DataFrame(
        {
            "user_id": rng.integers(0, n_users, n).astype(str),
            "timestamp": pd.to_datetime(day, unit="D")
            + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s"),
            "event_type": rng.choice(["purchase", "view", "cart"], n),
            "amount": rng.exponential(20, n).round(2),
            "quantity": rng.integers(0, 4, n).astype(float),
        }
    )
    return clean_events(raw)[0]


def tensors(events, prep=None, activity=("purchase",), max_len=16, users=None, cutoffs=(C,)):
    snaps = make_snapshots(
        events, list(cutoffs), horizon=90, obs_end=None, activity_event_types=list(activity)
    )
    index = EventIndex(events, activity_mask(events, list(activity)))
    prep = prep or Preprocessor.fit(
        index, snaps, users, max_len=max_len, activity_event_types=list(activity)
    )
    ds = prep.transform(index, snaps, users)
    return prep, ds, ds[np.arange(len(ds))]


# Several cutoffs per user: the dataset shares the log among its snapshots (data/ranges.py).
MONTHLY = (C - 300, C - 200, C - 100, C)


@pytest.mark.parametrize("cutoffs", [(C,), MONTHLY], ids=["copies", "shared"])
@pytest.mark.parametrize("refit", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_leakage_events_after_cutoff_change_no_input(seed, refit, cutoffs):
    events = random_log(seed)
    prep, ds, before = tensors(events, cutoffs=cutoffs)
    assert (ds.time is not None) == (len(cutoffs) > 1)  # each layout is the one under test
    rng = np.random.default_rng(100 + seed)
    after = events["day"] > C
    changed = events.copy()
    # Change every later event, add new ones (also of a type never seen) and drop some.
    changed.loc[after, "amount"] = rng.exponential(500, after.sum())
    changed.loc[after, "event_type"] = rng.choice(["purchase", "refund"], after.sum())
    changed.loc[after, "timestamp"] += pd.Timedelta(days=3)
    extra = changed[after].sample(frac=0.5, random_state=seed).assign(quantity=9.0)
    changed = pd.concat([changed, extra]).drop(
        changed[after].sample(frac=0.2, random_state=seed).index
    )
    changed["day"] = changed["timestamp"].to_numpy().astype("datetime64[D]").astype(np.int64)
    changed = changed.sort_values(["user_id", "timestamp"]).reset_index(drop=True)
    # Refitted, the scalers see the same training inputs, so they too must come out bit-identical.
    _, _, again = tensors(changed, None if refit else prep, cutoffs=cutoffs)
    for key in INPUT_KEYS:
        torch.testing.assert_close(before[key], again[key], rtol=0, atol=0, msg=key)


def test_a_shared_log_gives_the_batches_of_per_snapshot_copies():
    events = random_log(4, n=4000)
    snaps = make_snapshots(events, list(MONTHLY), 90, None, activity_event_types=["purchase"])
    index = EventIndex(events, activity_mask(events, ["purchase"]))
    prep, shared = Preprocessor.fit_transform(index, snaps, max_len=16)
    codes, _ = index.find_users(snaps["user_id"].to_numpy(object))
    cutoffs, users = snaps["cutoff"].to_numpy(), snaps["user_id"].to_numpy(object)
    seq = sequence_inputs(index, codes, cutoffs, 16, False, None, users, share=False)
    copies_stats = channel_stats(seq, cutoffs)
    # the summary block by hand, from the whole table at once
    raw = summary_features(index, codes, cutoffs, count_types=prep.count_types).to_numpy()
    logs = np.log1p(np.clip(raw, 0, None)).astype(np.float32)
    mean, std = (np.asarray(v, np.float32) for v in (prep.summary_mean, prep.summary_std))
    summary = (logs - mean) / std
    copies = prep._dataset(seq, summary, None, snaps, None)
    assert shared.time is not None and copies.time is None
    assert len(shared.event_type) < len(copies.event_type)  # each event once, not per snapshot
    rows = np.arange(len(snaps))
    a, b = shared[rows], copies[rows]
    for key in (*INPUT_KEYS, CUTOFF, INDEX):
        assert torch.equal(a[key], b[key]), key
    for fitted, direct in zip((prep.numeric_mean, prep.numeric_std), copies_stats):
        np.testing.assert_allclose(fitted, direct, rtol=1e-9)


def test_summaries_and_their_tensor_do_not_depend_on_the_chunk_of_snapshots():
    events = random_log(5, n=4000)
    snaps = make_snapshots(events, list(MONTHLY), 90, None, activity_event_types=["purchase"])
    index = EventIndex(events, activity_mask(events, ["purchase"]))
    prep, whole = Preprocessor.fit_transform(index, snaps, max_len=16)
    codes, cutoffs = index.find_users(snaps["user_id"].to_numpy(object))[0], snaps["cutoff"]
    table = summary_features(index, codes, cutoffs, prep.count_types).to_numpy()
    for size in (1, 7, 1000):
        chunks = summary_chunks(index, codes, cutoffs, prep.count_types, chunk=size)
        parts = [np.column_stack(columns) for _, columns in chunks]
        assert np.array_equal(np.vstack(parts), table), size
    # one snapshot at a time through the fitted scalers: the rows of the whole
    for row in (0, len(snaps) // 2, len(snaps) - 1):
        alone = prep.transform(index, snaps.iloc[[row]])
        assert torch.equal(alone.summary[0], whole.summary[row]), row


def test_truncation_keeps_the_last_events_oldest_first():
    events = random_log(0)
    _, ds, batch = tensors(events, max_len=5)
    lengths = batch[MASK].sum(1)
    assert lengths.max() == 5
    # days before the cutoff decrease along the sequence: oldest first, the latest kept
    days_before = batch[NUMERIC][..., time_channel()]
    real = batch[MASK]
    diffs = (days_before[:, 1:] - days_before[:, :-1])[real[:, 1:]]
    assert (diffs <= 1e-6).all()
    assert (batch[EVENT_TYPE][~real] == PAD_ID).all() and (batch[NUMERIC][~real] == 0).all()


def test_unseen_event_type_maps_to_oov():
    events = random_log(1)
    prep, _, _ = tensors(events)
    renamed = events.assign(event_type=events["event_type"].replace("cart", "wishlist"))
    _, _, batch = tensors(renamed, prep)
    assert (batch[EVENT_TYPE] == OOV_ID).any()
    assert "wishlist" not in prep.vocab


def test_static_attributes_and_missing_ones(tmp_path):
    events = random_log(2)
    users = pd.DataFrame({"user_id": events["user_id"].unique()})
    users["country"] = np.where(users.index % 2 == 0, "DE", "FR")
    prep, _, batch = tensors(events, users=users)
    assert prep.sizes["static_cardinalities"] == [3]
    assert set(batch[STATIC].unique().tolist()) == {1, 2}
    from seqchurn.errors import DataError

    with pytest.raises(DataError, match="country"):
        tensors(events, prep, users=users[["user_id"]])


def test_bucketing_covers_every_row_once_and_is_seeded():
    lengths = np.random.default_rng(0).integers(1, 50, 1000)
    sampler = BucketBatchSampler(lengths, 32, shuffle=True, seed=3)
    rows = np.concatenate(list(sampler))
    assert sorted(rows.tolist()) == list(range(1000))
    assert [b.tolist() for b in sampler] == [
        b.tolist() for b in BucketBatchSampler(lengths, 32, shuffle=True, seed=3)
    ]
    sampler.set_epoch(1)
    assert np.concatenate(list(sampler)).tolist() != rows.tolist()
    # bucketing keeps padding small: the mean spread of lengths inside a batch
    spread = np.mean(
        [np.ptp(lengths[b]) for b in BucketBatchSampler(lengths, 32, shuffle=True, seed=3)]
    )
    assert spread < 5


def test_loader_batches_reassemble_the_dataset():
    events = random_log(3)
    _, ds, full = tensors(events)
    seen = {}
    for batch in make_loader(ds, 7, shuffle=True):
        for j, row in enumerate(batch[INDEX].tolist()):
            n = int(batch[MASK][j].sum())
            seen[row] = batch[NUMERIC][j, :n]
    assert sorted(seen) == list(range(len(ds)))
    for row, numeric in seen.items():
        n = int(full[MASK][row].sum())
        torch.testing.assert_close(numeric, full[NUMERIC][row, :n])


def test_balanced_sampler_draws_each_class_equally():
    labels = np.r_[np.ones(900), np.zeros(100)]
    lengths = np.random.default_rng(1).integers(1, 30, 1000)
    sampler = BucketBatchSampler(lengths, 50, shuffle=True, seed=0, balance_labels=labels)
    rows = np.concatenate(list(sampler))
    assert len(rows) == 1000
    assert abs(labels[rows].mean() - 0.5) < 0.06  # 0.9 without balancing


def test_a_cutoff_long_after_the_log_reads_each_user_alone():
    # A streamed chunk may end years before the cutoff: lookups must not run into the next user.
    def log(users):
        days = {"a": [1000, 1003], "b": [1000, 1005, 1010]}
        rows = [(u, d) for u in users for d in days[u]]
        raw = pd.DataFrame(rows, columns=["user_id", "day"])
        raw["timestamp"] = pd.to_datetime(raw["day"], unit="D")
        return clean_events(raw.drop(columns="day").assign(amount=5.0))[0]

    cutoff = 3000
    together, alone = log(["a", "b"]), log(["a"])
    snaps = pd.DataFrame({"user_id": ["a"], "cutoff": [cutoff]})
    index = EventIndex(together)
    prep = Preprocessor.fit(index, snaps, max_len=8)
    want = prep.transform(EventIndex(alone), snaps)[[0]]
    got = prep.transform(index, snaps)[[0]]
    for key in INPUT_KEYS:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)
    assert int(got[MASK].sum()) == 2


def test_scoring_batches_stop_at_max_tokens_padded_events():
    lengths = np.sort(np.random.default_rng(0).integers(1, 300, size=500))
    sampler = BucketBatchSampler(lengths, 64, max_tokens=1000)
    batches = list(sampler)
    assert np.array_equal(np.concatenate(batches), np.arange(500))  # every row once, in order
    for b in batches:
        assert len(b) <= 64
        assert len(b) == 1 or len(b) * lengths[b].max() <= 1000
    # a longer row than the budget still gets a batch of its own
    assert [len(b) for b in BucketBatchSampler(np.array([5, 2000]), 64, max_tokens=100)] == [1, 1]
    assert [len(b) for b in BucketBatchSampler(lengths, 64)] == [64] * 7 + [52]

"""The sequence ablations (data.ablate): order destroyed with the time channels in place, time
channels removed; applied the same way to every split and stored with the preprocessing."""

from __future__ import annotations

import hydra
import numpy as np
import pandas as pd
import pytest
import torch

from seqchurn.data.ablation import ablate_events
from seqchurn.data.events import clean_events
from seqchurn.data.feature_table import SEQUENCE_CHANNELS
from seqchurn.data.features import last_events
from seqchurn.data.labels import to_day
from seqchurn.data.sequences import EVENT_TYPE, MASK, NUMERIC, SUMMARY, Preprocessor
from seqchurn.data.timeline import EventIndex
from seqchurn.datamodule import ChurnDataModule
from seqchurn.errors import DataError

EVENT_COLS = [j for j, f in enumerate(SEQUENCE_CHANNELS) if f.column]
TIME_COLS = [j for j, f in enumerate(SEQUENCE_CHANNELS) if not f.column]


def _ragged(n_users: int = 30, users=None):
    rng = np.random.default_rng(0)
    n = 600
    raw = pd.DataFrame(
        {
            "user_id": rng.integers(0, n_users, n).astype(str),
            "timestamp": pd.Timestamp("2021-01-01")
            + pd.to_timedelta(rng.integers(0, 300 * 24, n), unit="h"),
            "event_type": rng.choice(["view", "cart", "purchase"], n),
            "amount": rng.exponential(20, n).round(2),
            "quantity": rng.integers(1, 4, n).astype(float),
        }
    )
    events = clean_events(raw)[0]
    index = EventIndex(events)
    cutoffs = [to_day("2021-06-30"), to_day("2021-09-30")]
    snaps = pd.concat(
        [
            pd.DataFrame(
                {"user_id": events.loc[events["day"] <= c, "user_id"].unique(), "cutoff": c}
            )
            for c in cutoffs
        ],
        ignore_index=True,
    )
    if users is not None:
        snaps = snaps[snaps["user_id"].isin(users)].reset_index(drop=True)
    codes = index.user_codes(snaps["user_id"].to_numpy(object))
    cut = snaps["cutoff"].to_numpy(np.int64)
    return (lambda: last_events(index, codes, cut, max_len=16)), snaps


def _per_snapshot(ragged, i):
    a, b = ragged.offsets[i], ragged.offsets[i + 1]
    return ragged.type_code[a:b], ragged.raw[a:b]


def test_order_ablation_permutes_events_within_each_snapshot_and_keeps_time_in_place():
    build, snaps = _ragged()
    before = build()
    after = ablate_events(build(), "order", snaps["user_id"].to_numpy(object), snaps["cutoff"])
    moved = 0
    for i in range(len(snaps)):
        (t0, r0), (t1, r1) = _per_snapshot(before, i), _per_snapshot(after, i)
        np.testing.assert_array_equal(r0[:, TIME_COLS], r1[:, TIME_COLS])  # time stays
        # the same events (type with its amount and quantity), in another order
        key0 = sorted(zip(t0, *r0[:, EVENT_COLS].T))
        key1 = sorted(zip(t1, *r1[:, EVENT_COLS].T))
        assert key0 == key1
        moved += not np.array_equal(t0, t1)
    assert moved > len(snaps) // 2
    np.testing.assert_array_equal(after.numeric, np.log1p(after.raw).astype(np.float32))


def test_order_ablation_of_a_snapshot_depends_on_that_snapshot_only():
    build, snaps = _ragged()
    full = ablate_events(build(), "order", snaps["user_id"].to_numpy(object), snaps["cutoff"])
    again = ablate_events(build(), "order", snaps["user_id"].to_numpy(object), snaps["cutoff"])
    np.testing.assert_array_equal(full.type_code, again.type_code)  # deterministic
    some = ["3", "7", "11"]
    build_some, snaps_some = _ragged(users=some)
    part = ablate_events(
        build_some(), "order", snaps_some["user_id"].to_numpy(object), snaps_some["cutoff"]
    )
    rows = np.flatnonzero(snaps["user_id"].isin(some).to_numpy())
    for j, i in enumerate(rows):
        t_full, r_full = _per_snapshot(full, i)
        t_part, r_part = _per_snapshot(part, j)
        np.testing.assert_array_equal(t_full, t_part)
        np.testing.assert_array_equal(r_full, r_part)


def test_time_ablation_zeroes_the_time_channels_only():
    build, snaps = _ragged()
    before = build()
    after = ablate_events(build(), "time", snaps["user_id"].to_numpy(object), snaps["cutoff"])
    assert (after.raw[:, TIME_COLS] == 0).all() and (after.numeric[:, TIME_COLS] == 0).all()
    assert (before.raw[:, TIME_COLS] != 0).any()
    np.testing.assert_array_equal(before.raw[:, EVENT_COLS], after.raw[:, EVENT_COLS])
    np.testing.assert_array_equal(before.type_code, after.type_code)


def test_unknown_ablation_is_a_data_error():
    build, snaps = _ragged()
    with pytest.raises(DataError, match="data.ablate must be one of"):
        ablate_events(build(), "shuffle", snaps["user_id"].to_numpy(object), snaps["cutoff"])


@pytest.mark.parametrize("ablate", ["order", "time"])
def test_datamodule_applies_the_ablation_to_every_split_and_keeps_it(make_cfg, ablate):
    tensors = {}
    for mode in (None, ablate):
        cfg = make_cfg(
            [
                "data=synthetic_sequence",
                "data.synthetic.n_users=300",
                f"data.ablate={mode or 'null'}",
            ]
        )
        dm = hydra.utils.instantiate(cfg.data, _convert_="all")
        dm.setup("fit")
        tensors[mode] = {s: dm.dataset(s)[np.arange(len(dm.dataset(s)))] for s in ("train", "test")}
        pre = dm.preprocessor
    assert Preprocessor.from_state_dict(pre.state_dict()).ablate == ablate
    for split, plain in tensors[None].items():
        ablated = tensors[ablate][split]
        for key in (MASK, SUMMARY):  # the summary branch sees the whole history as before
            assert torch.equal(plain[key], ablated[key]), (split, key)
        same_time = torch.equal(plain[NUMERIC][..., TIME_COLS], ablated[NUMERIC][..., TIME_COLS])
        same_types = torch.equal(plain[EVENT_TYPE], ablated[EVENT_TYPE])
        assert same_time == (ablate == "order") and same_types == (ablate == "time"), split


def test_datamodule_refuses_an_unknown_ablation():
    with pytest.raises(DataError, match="data.ablate"):
        ChurnDataModule(source="cdnow", ablate="shuffle")

"""Labels, tau and censoring (DESIGN section 3) against a naive per-user loop."""

import numpy as np
import pandas as pd
import pytest

from seqchurn.data import labels
from seqchurn.data.events import clean_events
from seqchurn.data.labels import (
    DEFAULT_BIN_EDGES,
    activity_mask,
    make_snapshots,
    merge_bins,
    month_end_cutoffs,
    to_day,
)
from seqchurn.data.timeline import EventIndex
from seqchurn.errors import DataError

H = 90


def naive_labels(events, cutoffs, horizon, obs_end, edges, activity=None):
    """The definitions of DESIGN section 3, one user and one cutoff at a time."""
    rows = []
    act = events if activity is None else events[events["event_type"].isin(activity)]
    for user, g in act.groupby("user_id"):
        days = sorted(set(int(d) for d in g["day"] if d <= obs_end))
        for c in cutoffs:
            if not any(d <= c for d in days):
                continue
            after = [d for d in days if d > c]
            y = not any(d <= c + horizon for d in after)
            if y:
                tau = 0
            else:
                onset = None
                for i, d in enumerate(after):
                    nxt = after[i + 1] if i + 1 < len(after) else None
                    if nxt is None or nxt - d > horizon:
                        onset = d
                        break
                tau = onset - c
            room = obs_end - horizon - c
            m = max(e for e in edges if e <= room)
            observed = tau <= m
            value = tau if observed else m
            if observed:
                k = (
                    0
                    if tau == 0
                    else next((i for i, e in enumerate(edges) if tau <= e), len(edges))
                )
            else:
                k = edges.index(m)
            rows.append((str(user), c, int(y), value, observed, k))
    return pd.DataFrame(rows, columns=["user_id", "cutoff", "y", "tau", "observed", "tau_bin"])


def _frame(user, day, etype=None):
    ts = pd.to_datetime(np.asarray(day), unit="D")
    raw = pd.DataFrame(
        {"user_id": user, "timestamp": ts, "event_type": etype if etype is not None else "purchase"}
    )
    return clean_events(raw)[0]


def _compare(events, cutoffs, obs_end, edges, activity=None):
    got = make_snapshots(
        events, cutoffs, horizon=H, obs_end=obs_end, bin_edges=edges, activity_event_types=activity
    )
    # the caller's own timeline (as the DataModule and predict pass it) gives the same rows
    index = EventIndex(events, activity_mask(events, activity))
    shared = make_snapshots(
        events,
        cutoffs,
        horizon=H,
        obs_end=obs_end,
        bin_edges=edges,
        activity_event_types=activity,
        index=index,
    )
    pd.testing.assert_frame_equal(got, shared)
    want = naive_labels(events, cutoffs, H, obs_end, list(edges), activity)
    got = got.sort_values(["user_id", "cutoff"]).reset_index(drop=True)
    want = want.sort_values(["user_id", "cutoff"]).reset_index(drop=True)
    assert len(got) == len(want)
    for col in ["user_id", "cutoff", "y", "tau", "observed", "tau_bin"]:
        np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy(), err_msg=col)
    return got


@pytest.mark.parametrize("queries_per_chunk", [None, 5])
@pytest.mark.parametrize("seed", range(6))
def test_random_logs_match_naive_loop(seed, queries_per_chunk, monkeypatch):
    if queries_per_chunk:  # a user or two per chunk: the chunks' rows are the whole's
        monkeypatch.setattr(labels, "_QUERIES_PER_CHUNK", queries_per_chunk)
    rng = np.random.default_rng(seed)
    n = 400
    users = rng.integers(0, 60, n)
    # Clustered days so gaps near H, same-day events and long silences all occur.
    days = rng.integers(0, 700, n) // rng.choice([1, 10, 30], n) * rng.choice([1, 10, 30], n) % 700
    types = rng.choice(["purchase", "view"], n, p=[0.6, 0.4])
    events = _frame(users.astype(str), days + 1000, types)
    cutoffs = [1100, 1200, 1250, 1300]
    obs_end = 1600
    edges = merge_bins(DEFAULT_BIN_EDGES, cutoffs, obs_end, H)
    _compare(events, cutoffs, obs_end, edges)
    _compare(events, cutoffs, obs_end, edges, activity=["purchase"])


def test_edge_cases():
    c = 1000
    cases = {
        "silent_after": [990],  # no events after C: y = 1
        "same_day": [990, 1005, 1005, 1005],  # same-day events: one activity day
        "exactly_h_apart": [990, 1010, 1010 + H],  # two days exactly H apart are no silence
        "h_plus_one_apart": [990, 1010, 1011 + H],
        "on_bin_edge": [990, 1030],  # tau = 30, on the edge of bin 1
        "between_m_and_room": [990, 1010, 1100, 1190],  # tau beyond m but within E - H - C
        "late_first": [1001],  # not eligible at C
        "on_cutoff_day": [
            1000,
            1091,
        ],  # an event on C counts as input; C + H + 1 is outside the window
    }
    users, days = zip(*[(u, d) for u, ds in cases.items() for d in ds])
    events = _frame(list(users), list(days))
    obs_end = c + H + 200  # E - H - C = 200 -> m = 180 with default edges
    got = _compare(events, [c], obs_end, list(DEFAULT_BIN_EDGES)).set_index("user_id")
    assert "late_first" not in got.index
    assert got.loc["silent_after", "y"] == 1 and got.loc["silent_after", "tau"] == 0
    assert got.loc["exactly_h_apart", "tau"] == 10 + H
    assert got.loc["h_plus_one_apart", "tau"] == 10
    assert got.loc["on_bin_edge", "tau"] == 30 and got.loc["on_bin_edge", "tau_bin"] == 1
    assert (
        not got.loc["between_m_and_room", "observed"]
        and got.loc["between_m_and_room", "tau"] == 180
    )
    assert got.loc["on_cutoff_day", "y"] == 1


def test_short_room_and_merged_bins():
    # E - H - C below 30: only bin 0 can be observed at that cutoff.
    events = _frame(["a", "a", "a", "b", "b"], [980, 1010, 1020, 990, 1200])
    got = _compare(events, [1000], 1000 + H + 20, list(DEFAULT_BIN_EDGES)).set_index("user_id")
    assert not got.loc["a", "observed"] and got.loc["a", "tau_bin"] == 0
    # Bins no training cutoff can observe are merged into the open bin.
    assert merge_bins(DEFAULT_BIN_EDGES, [1000, 1030], 1000 + H + 200, H) == [0, 30, 60, 90, 180]
    assert merge_bins(DEFAULT_BIN_EDGES, [1000], 1000 + H + 10, H) == [0]
    events = _frame(["a", "a", "a", "a"], [980, 1010, 1090, 1170])
    got = _compare(events, [1000], 1000 + H + 200, [0, 30, 60])
    assert got["tau_bin"].iloc[0] == 2 and not got["observed"].iloc[0]


def test_labels_ignore_events_after_obs_end():
    events = _frame(["a", "a", "a"], [990, 1010, 1095])
    obs_end = 1000 + H
    before = make_snapshots(events, [1000], horizon=H, obs_end=obs_end)
    later = _frame(["a", "a", "a", "a"], [990, 1010, 1095, 1100])
    pd.testing.assert_frame_equal(before, make_snapshots(later, [1000], horizon=H, obs_end=obs_end))


def test_cutoff_past_observation_end_is_refused():
    events = _frame(["a"], [990])
    with pytest.raises(DataError, match="observation end"):
        make_snapshots(events, [1000], horizon=H, obs_end=1000 + H - 1)


def test_month_end_cutoffs_cdnow():
    got = month_end_cutoffs(to_day("1997-01-01"), to_day("1997-12-31"), H)
    assert got[0] == to_day("1997-03-31") and got[-1] == to_day("1997-09-30") and len(got) == 7

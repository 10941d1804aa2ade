"""LightningDataModule: read the log, cut snapshots, split users, fit preprocessing, serve loaders."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import pytorch_lightning as pl

from seqchurn.data.ablation import check_ablation
from seqchurn.data.events import MAX_VALUE, clean_events, read_raw, read_users
from seqchurn.data.features import EventIndex, summary_features
from seqchurn.data.labels import (
    DEFAULT_BIN_EDGES,
    activity_mask,
    check_cutoff_in_data,
    make_snapshots,
    aligned_cutoffs,
    merge_bins,
    month_end_cutoffs,
    to_date,
)
from seqchurn.data.batches import make_loader
from seqchurn.data.sequences import Preprocessor, SnapshotDataset
from seqchurn.data.windows import (
    check_halflife,
    choose_window,
    parse_windows,
    recency_weights,
)
from seqchurn.retention.segments import SegmentModel, SegmentSettings, fit_segments
from seqchurn.simulate import SimulatedLog
from seqchurn.errors import DataError, check_fraction, check_settings
from seqchurn.models.heads import pooled_hazards
from seqchurn.module import PREPROCESSING_KEY
from seqchurn.data.timestamps import config_day


CUTOFF_RULES = ("month_end", "aligned")


class ChurnDataModule(pl.LightningDataModule):
    """Snapshots for training (month-end cutoffs, labels ending by the test cutoff), validation and test.

    Validation holds out a fixed share of users with all their training snapshots; test
    scores every eligible user at the test cutoff (or only held-out users, when
    `test_user_fraction` > 0, as in the synthetic protocol).
    """

    def __init__(
        self,
        source: str = "cdnow",  # cdnow | events; ignored when `synthetic` gives the events
        path: str | None = None,
        columns: Mapping[str, str] | None = None,
        users_path: str | None = None,
        horizon_days: int = 90,
        test_cutoff: str | None = None,
        train_cutoffs: Sequence[str] | None = None,
        cutoff_rule: str = "month_end",
        cutoff_step_days: int = 30,
        train_windows: Sequence | None = None,
        recency_halflife_days: float | None = None,
        obs_end: str | None = None,
        activity_event_types: Sequence[str] | None = None,
        merge_same_day: bool = False,
        on_bad_rows: str = "raise",
        timestamp_format: str | None = None,
        max_value: float = MAX_VALUE,
        bin_edges: Sequence[int] = DEFAULT_BIN_EDGES,
        val_fraction: float = 0.15,
        test_user_fraction: float = 0.0,
        train_fraction: float = 1.0,
        split_seed: int = 0,
        max_len: int = 256,
        max_event_types: int = 50,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        num_workers: int = 0,
        balanced_sampling: bool = False,
        ablate: str | None = None,
        seed: int = 0,
        synthetic: SimulatedLog | None = None,
        segments: Mapping | None = None,
    ):
        super().__init__()
        check_settings(
            {
                "horizon_days": horizon_days,
                "max_len": max_len,
                "max_event_types": max_event_types,
                "batch_size": batch_size,
                "eval_batch_size": eval_batch_size,
            },
            positive_int=True,
        )
        check_settings({"cutoff_step_days": cutoff_step_days}, positive_int=True)
        if cutoff_rule not in CUTOFF_RULES:
            raise DataError(
                f"data.cutoff_rule must be one of {', '.join(CUTOFF_RULES)}, got {cutoff_rule!r}"
            )
        parse_windows(train_windows)
        check_halflife(recency_halflife_days)
        check_settings({"num_workers": num_workers, "split_seed": split_seed}, positive_int=False)
        check_fraction("data.val_fraction", val_fraction, upper_open=True)
        check_ablation(ablate)
        check_fraction("data.test_user_fraction", test_user_fraction, upper_open=True)
        check_fraction("data.train_fraction", train_fraction)
        if train_fraction == 0:
            raise DataError("data.train_fraction must be above 0, got 0")
        if not (isinstance(max_value, (int, float)) and 0 < max_value < float("inf")):
            raise DataError(f"data.max_value must be a positive finite number, got {max_value!r}")
        self.save_hyperparameters(logger=False, ignore=["synthetic"])
        self.simulated = synthetic
        self.events: pd.DataFrame | None = None
        self.oracle: pd.DataFrame | None = None

    # -- data -----------------------------------------------------------------------------
    def _load(self) -> pd.DataFrame:
        hp = self.hparams
        sim = self.simulated
        raw = sim.events if sim is not None else read_raw(hp.source, hp.path, hp.columns)
        events, self.report = clean_events(
            raw,
            on_bad_rows=hp.on_bad_rows,
            merge_same_day=hp.merge_same_day,
            timestamp_format=hp.timestamp_format,
            max_value=hp.max_value,
        )
        return events

    def setup(self, stage: str | None = None) -> None:
        if self.events is not None:
            return
        hp = self.hparams
        events = self._load()
        users = read_users(hp.users_path) if hp.users_path else None
        horizon = int(hp.horizon_days)
        if horizon <= 0:
            raise DataError(f"data.horizon_days must be positive, got {horizon}")
        last_day = int(events["day"].max())
        obs_end = config_day(hp.obs_end, "data.obs_end") if hp.obs_end else last_day
        test_cutoff = (
            config_day(hp.test_cutoff, "data.test_cutoff") if hp.test_cutoff else obs_end - horizon
        )
        check_cutoff_in_data(events, test_cutoff, "data.test_cutoff")
        if test_cutoff + horizon > obs_end:
            raise DataError(
                f"data.test_cutoff {to_date(test_cutoff)} leaves fewer than {horizon} days of labels before "
                f"the end of the data {to_date(obs_end)}"
            )
        if hp.train_cutoffs:
            train_cutoffs = sorted(config_day(c, "data.train_cutoffs") for c in hp.train_cutoffs)
            for c in train_cutoffs:
                check_cutoff_in_data(events, c, "training cutoff")
        elif hp.cutoff_rule == "aligned":
            first = int(events["day"].min())
            train_cutoffs = aligned_cutoffs(first, test_cutoff, horizon, hp.cutoff_step_days)
        else:
            train_cutoffs = month_end_cutoffs(int(events["day"].min()), test_cutoff, horizon)
        if not train_cutoffs:
            raise DataError(
                f"no {hp.cutoff_rule.replace('_', '-')} training cutoff C with C + {horizon} days <= the test cutoff {to_date(test_cutoff)}; "
                "move data.test_cutoff later or list data.train_cutoffs"
            )
        activity = hp.activity_event_types
        index = EventIndex(events, activity_mask(events, activity))
        test_users, val_users, dropped = split_users(
            events,
            activity,
            test_cutoff,
            hp.val_fraction,
            hp.test_user_fraction,
            hp.split_seed,
            train_fraction=hp.train_fraction,
        )
        train_cutoffs = self._choose_window(
            index, events, train_cutoffs, test_cutoff, val_users, test_users | dropped
        )
        self.bin_edges = merge_bins(hp.bin_edges, train_cutoffs, test_cutoff, horizon)
        train_snaps = make_snapshots(
            events, train_cutoffs, horizon, test_cutoff, self.bin_edges, activity
        )
        test_snaps = make_snapshots(
            events, [test_cutoff], horizon, obs_end, self.bin_edges, activity
        )

        if test_users:
            train_snaps = train_snaps[~train_snaps["user_id"].isin(test_users)]
            test_snaps = test_snaps[test_snaps["user_id"].isin(test_users)]
        in_val = train_snaps["user_id"].isin(val_users)
        in_train = ~in_val & ~train_snaps["user_id"].isin(dropped)
        self.snapshots = {
            "train": train_snaps[in_train].reset_index(drop=True),
            "val": train_snaps[in_val].reset_index(drop=True),
            "test": test_snaps.reset_index(drop=True),
        }
        for split, frame in self.snapshots.items():
            if len(frame) == 0:
                raise DataError(
                    f"the {split} snapshot is empty: no eligible user (check cutoffs and the split)"
                )

        self.preprocessor, train = Preprocessor.fit_transform(
            index,
            self.snapshots["train"],
            users,
            hp.max_len,
            hp.max_event_types,
            activity,
            ablate=hp.ablate,
        )
        self.datasets = {"train": train} | {
            k: self.preprocessor.transform(index, self.snapshots[k], users) for k in ("val", "test")
        }
        self.segments = self._fit_segments(index, self.snapshots["train"])
        self.train_cutoffs, self.test_cutoff, self.obs_end = train_cutoffs, test_cutoff, obs_end
        if self.simulated is not None:
            oracle = self.simulated.oracle(test_cutoff, horizon)[["user_id", "p_churn_oracle"]]
            self.oracle = self.snapshots["test"][["user_id"]].merge(
                oracle, on="user_id", how="left"
            )
        # Kept for the steps after setup that read the same events (pretraining).
        self.index, self.users = index, users
        self.events = events

    def _choose_window(
        self,
        index: EventIndex,
        events: pd.DataFrame,
        cutoffs: list[int],
        test_cutoff: int,
        val_users: set,
        excluded: set,
    ) -> list[int]:
        """The training cutoffs of the window data.train_windows picks (data/windows.py)."""
        hp = self.hparams
        windows = parse_windows(hp.train_windows)
        self.window = {"chosen": "all", "kept": len(cutoffs), "of": len(cutoffs)}
        if not windows:
            return cutoffs
        snaps = make_snapshots(
            events, cutoffs, int(hp.horizon_days), test_cutoff, [0], hp.activity_event_types
        )
        snaps = snaps[~snaps["user_id"].isin(excluded)]
        in_val = snaps["user_id"].isin(val_users)
        kept, self.window = choose_window(
            index, snaps[~in_val], snaps[in_val], windows, min_days=max(hp.bin_edges)
        )
        return [c for c in cutoffs if c >= kept[0]]

    def _fit_segments(self, index: EventIndex, snapshots: pd.DataFrame) -> SegmentModel:
        """RFM edges and K-means on the training snapshots' raw recency, frequency, spend.

        The snapshots come in (user, cutoff) order, so the fit does not depend on file order.
        """
        codes, _ = index.find_users(snapshots["user_id"].to_numpy(dtype=object))
        cutoffs = snapshots["cutoff"].to_numpy(np.int64)
        rfm = summary_features(index, codes=codes, cutoffs=cutoffs, count_types=())
        settings = SegmentSettings.from_config(self.hparams.segments, seed=self.hparams.seed)
        return fit_segments(rfm, settings)

    @property
    def sizes(self) -> dict:
        """Data-derived sizes for building the model."""
        return self.preprocessor.sizes

    @property
    def hazard_prior(self) -> list[float]:
        """Pooled per-bin hazards of the training rows, where the model's head starts."""
        train = self.snapshots["train"]
        return pooled_hazards(train["tau_bin"], train["observed"], len(self.bin_edges))

    def preprocessing_state(self) -> dict:
        """What prediction needs besides the weights: preprocessing, bins and the label settings."""
        hp = self.hparams
        return {
            "preprocessor": self.preprocessor.state_dict(),
            "bin_edges": list(self.bin_edges),
            "horizon_days": int(hp.horizon_days),
            "test_cutoff": to_date(self.test_cutoff),
            "train_cutoffs": [to_date(c) for c in self.train_cutoffs],
            "train_window": dict(self.window),
            "merge_same_day": bool(hp.merge_same_day),
            "input_columns": list(self.report.get("input_columns", [])),
            "segments": self.segments.state_dict(),
        }

    def state_dict(self) -> dict:
        # Lightning saves this into every checkpoint (under the class name); see module.py.
        return {PREPROCESSING_KEY: self.preprocessing_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        # setup() refits the same state from the same data and seed; nothing to restore.
        pass

    def describe(self) -> str:
        """One line per split: rows, users and churn rate."""
        lines = []
        for split, frame in self.snapshots.items():
            lines.append(
                f"{split:>5}: {len(frame):>7} snapshots, {frame['user_id'].nunique():>6} users, "
                f"cutoffs {to_date(frame['cutoff'].min())}..{to_date(frame['cutoff'].max())}, churn rate {frame['y'].mean():.3f}"
            )
        return "\n".join(lines)

    # -- loaders --------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool) -> object:
        hp = self.hparams
        size = hp.batch_size if shuffle else hp.eval_batch_size
        balanced = bool(hp.balanced_sampling) and split == "train"
        weights = None
        if split == "train":
            cutoffs = self.snapshots["train"]["cutoff"].to_numpy(np.int64)
            weights = recency_weights(cutoffs, hp.recency_halflife_days)
        return make_loader(
            self.datasets[split],
            size,
            shuffle=shuffle,
            seed=hp.seed,
            num_workers=hp.num_workers,
            balanced=balanced,
            row_weights=weights,
        )

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("val", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)

    def dataset(self, split: str) -> SnapshotDataset:
        return self.datasets[split]


def split_users(
    events: pd.DataFrame,
    activity_event_types: Sequence[str] | None,
    test_cutoff: int,
    val_fraction: float,
    test_user_fraction: float,
    seed: int,
    train_fraction: float = 1.0,
) -> tuple[set, set, set]:
    """Held-out test users, validation users and the training users left out, drawn among
    users active by the test cutoff.

    Users whose first activity comes after the test cutoff never reach a training, validation
    or test snapshot; drawing over them too would let later data reshuffle the split. The
    training users kept at `train_fraction` are a prefix of one shuffle, so a smaller fraction's
    users are among a larger one's (a data-scaling curve adds users, never swaps them), and the
    validation and test users do not depend on it.
    """
    active = events.loc[activity_mask(events, activity_event_types), ["user_id", "day"]]
    known = np.unique(active.loc[active["day"] <= test_cutoff, "user_id"].to_numpy(dtype=object))
    shuffled = known[np.random.default_rng(seed).permutation(len(known))]
    n_test = int(round(test_user_fraction * len(known)))
    n_val = int(round(val_fraction * (len(known) - n_test)))
    rest = shuffled[n_test + n_val :]
    n_train = max(1, int(round(train_fraction * len(rest))))
    return set(shuffled[:n_test]), set(shuffled[n_test : n_test + n_val]), set(rest[n_train:])

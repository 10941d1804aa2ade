"""Checkpoint -> per-user predictions at a cutoff (DESIGN section 6); no Hydra.

`load_model` reads a checkpoint; `Scorer.score` turns the cleaned events of some users into
the prediction columns (batch predict and the service); `predict_log` streams a whole log
through it in chunks of users and writes the output file atomically.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from seqchurn.data.events import MAX_VALUE, clean_events, read_users
from seqchurn.data.labels import activity_mask, make_snapshots, to_date, to_day
from seqchurn.data.batches import make_loader
from seqchurn.data.sequences import INDEX, Preprocessor, SnapshotDataset
from seqchurn.data.stream import iter_user_chunks, total_rows
from seqchurn.data.timeline import EventIndex
from seqchurn.errors import DataError, check_settings
from seqchurn.io import check_outputs, write_predictions
from seqchurn.explain import explainer
from seqchurn.models.heads import survival_curve, tau_median, tau_restricted_mean
from seqchurn.module import ChurnModule
from seqchurn.retention.segments import SegmentModel
from seqchurn.retention.tiers import assign_tiers
from seqchurn.data.timestamps import config_day

log = logging.getLogger(__name__)

SURVIVAL_DAYS = (30, 90, 180, 365)
PRECISIONS = ("32-true", "bf16-mixed")
RFM_COLUMNS = ("recency_days", "frequency_days", "monetary_mean")
MAX_DAYS = 106_000  # days since 1970 that datetime64[ns] holds (to 2262)


def load_model(ckpt_path: str | Path, device: str | torch.device = "cpu") -> ChurnModule:
    """A trained ChurnModule in eval mode with its preprocessing state; DataError if unusable."""
    path = Path(str(ckpt_path))
    if not path.is_file():
        raise DataError(f"checkpoint {path} not found")
    try:
        model = ChurnModule.load_from_checkpoint(path, map_location=device, weights_only=False)
    except Exception as err:  # a corrupt file or another project's checkpoint: one line, exit 2
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"cannot load checkpoint {path}: {first}") from err
    if not model.preprocessing or "preprocessor" not in model.preprocessing:
        raise DataError(
            f"checkpoint {path} has no preprocessing state; train it with scripts/train.py"
        )
    return model.eval()


def resolve_device(accelerator: str | None) -> torch.device:
    """'cpu' | 'gpu' | 'cuda' | 'auto' -> a torch device; asking for a GPU without one is a bad input."""
    accelerator = (accelerator or "auto").lower()
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise DataError("trainer.accelerator=gpu but no CUDA device is available")
        return torch.device("cuda")
    if accelerator == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if accelerator == "cpu":
        return torch.device("cpu")
    raise DataError(f"unknown trainer.accelerator {accelerator!r}: use cpu, gpu or auto")


def check_columns(state: Mapping, present: set[str]) -> None:
    """Refuse data that lacks an optional column the model was trained with."""
    missing = [c for c in state.get("input_columns", []) if c not in present]
    if missing:
        raise DataError(
            f"the model was trained with column(s) {missing} that the data lacks; it has {sorted(present)}"
        )


def prediction_columns(
    logits: torch.Tensor, edges: list[int], cutoff: np.ndarray
) -> dict[str, np.ndarray]:
    """Hazard logits (B, K-1) -> p_churn, s_d, tau_median_days, tau_mean_days, expected_churn_date."""
    out = {"p_churn": torch.sigmoid(logits[:, 0]).double().cpu().numpy()}
    surv = (
        survival_curve(logits, edges, SURVIVAL_DAYS).double().cpu().numpy()
    )  # (B, D), NaN past the edge
    for j, d in enumerate(SURVIVAL_DAYS):
        out[f"s_{d}"] = surv[:, j]
    if len(edges) > 1:
        median = tau_median(logits, edges).double().cpu().numpy()
        mean = tau_restricted_mean(logits, edges).double().cpu().numpy()
    else:  # no bin beyond the churn bin: the model gives p_churn only
        median = mean = np.full(len(logits), np.nan)
    out["tau_median_days"] = median
    out["tau_mean_days"] = mean
    # Whole days as integers, NaT where the median is empty or past the datetime64[ns] range:
    # pandas' float path (to_datetime(unit="D")) raised FloatingPointError in the service.
    days = cutoff + np.floor(np.nan_to_num(median, nan=0.0, posinf=0.0, neginf=0.0))
    dated = np.isfinite(median) & (np.abs(days) < MAX_DAYS)
    dates = np.where(dated, days, 0).astype(np.int64).astype("datetime64[D]")
    out["expected_churn_date"] = np.where(dated, dates, np.datetime64("NaT")).astype("M8[ns]")
    return out


def expected_value_12m(rfm: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """Value expected in the next 12 months if the customer stays: mean order value x order rate.

    The order rate is the number of activity days over the user's tenure, with the tenure
    taken as at least H days, so one first order does not read as an order a day.
    """
    rate_per_day = rfm["frequency_days"].to_numpy() / np.maximum(
        rfm["tenure_days"].to_numpy(), horizon_days
    )
    return rfm["monetary_mean"].to_numpy() * rate_per_day * 365.0


@dataclass
class Scorer:
    """A loaded model with what scoring needs; `explain(model, batch, preprocessor, raw)` adds
    reasons, `raw` being the batch's unscaled inputs (data/sequences.RawInputs)."""

    model: ChurnModule
    device: torch.device = torch.device("cpu")
    batch_size: int = 4096
    explain: Callable | None = None
    precision: str = "32-true"  # or "bf16-mixed": the forward pass under bf16 autocast
    # Padded events per batch, past one user: the long tail of a length order in smaller
    # batches, which attention's square cost rewards; a row's outputs do not depend on it.
    max_tokens: int | None = 1 << 14
    preprocessor: Preprocessor = field(init=False)

    def __post_init__(self) -> None:
        state = self.model.preprocessing
        self.preprocessor = Preprocessor.from_state_dict(state["preprocessor"])
        self.edges = [int(e) for e in state["bin_edges"]]
        self.horizon = int(state["horizon_days"])
        self.tiers = state.get("tiers")  # fitted on validation predictions (callbacks.py)
        segments = state.get("segments")  # absent from checkpoints written before segments
        self.segments = SegmentModel.from_state_dict(segments) if segments else None
        if self.precision not in PRECISIONS:
            raise DataError(
                f"scoring.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        self.model.to(self.device).eval()
        if len(self.edges) == 1:
            warnings.warn(
                "the model has no time-to-churn bins: only p_churn is predicted", stacklevel=2
            )

    def _to_device(self, value):
        if not torch.is_tensor(value) or value.device == self.device:
            return value
        if self.device.type == "cuda":  # page-locked memory lets the copy overlap compute
            return value.pin_memory().to(self.device, non_blocking=True)
        return value.to(self.device)

    def _autocast(self):
        if self.precision == "bf16-mixed":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def inputs(
        self, events: pd.DataFrame, cutoff: int, users: pd.DataFrame | None = None
    ) -> tuple[pd.DataFrame, SnapshotDataset | None]:
        """Cleaned events of whole users -> (snapshots, dataset) of those eligible at `cutoff`.

        The dataset keeps the raw inputs: reasons quote them and the output's RFM columns
        are read from them. None when nobody is eligible."""
        pre = self.preprocessor
        activity = (
            activity_mask(events, pre.activity_event_types) if len(events) else np.zeros(0, bool)
        )
        if not activity.any():
            return pd.DataFrame(), None
        index = EventIndex(events, activity)
        snaps = make_snapshots(
            events,
            [cutoff],
            horizon=self.horizon,
            obs_end=None,
            bin_edges=self.edges,
            activity_event_types=pre.activity_event_types,
            index=index,
        )
        if len(snaps) == 0:
            return snaps, None
        return snaps, pre.transform(index, snaps, users, keep_raw=True)

    def score(
        self, events: pd.DataFrame, cutoff: int, users: pd.DataFrame | None = None
    ) -> pd.DataFrame:
        """Cleaned events of whole users -> one row per user eligible at `cutoff` (may be empty)."""
        snaps, dataset = self.inputs(events, cutoff, users)
        if dataset is None:
            return pd.DataFrame()
        pre = self.preprocessor
        logits = torch.empty(len(snaps), len(self.edges), dtype=torch.float32)
        reasons = np.empty(len(snaps), dtype=object)
        method = None
        for batch in make_loader(dataset, self.batch_size, max_tokens=self.max_tokens):
            batch = {k: self._to_device(v) for k, v in batch.items()}
            rows = batch[INDEX].cpu()
            with torch.inference_mode(), self._autocast():
                logits[rows] = self.model.calibrate(self.model(batch).float()).cpu()
            if self.explain is not None:
                raw = dataset.raw(rows)
                reasons[rows.numpy()], method = self.explain(self.model, batch, pre, raw)
        bad = ~torch.isfinite(logits).all(dim=1)
        if bad.any():
            raise DataError(
                f"the model gives non-finite predictions for {int(bad.sum())} user(s), e.g. "
                f"{snaps['user_id'].iloc[int(bad.nonzero()[0, 0])]!r}: its weights are not finite "
                "or their inputs are far outside what it was trained on"
            )
        rfm = dataset.raw_summary
        # Columns gathered first and framed once: a column at a time costs more than the
        # model itself on the service's batches of a hundred users.
        cutoffs = snaps["cutoff"].to_numpy()
        out = {
            "user_id": snaps["user_id"].to_numpy(dtype=object),
            "cutoff": cutoffs.astype("datetime64[D]").astype("M8[ns]"),
            **prediction_columns(logits, self.edges, cutoffs),
        }
        out["value_12m"] = expected_value_12m(rfm, self.horizon)
        out["value_at_risk"] = out["p_churn"] * out["value_12m"]
        if self.tiers:
            out["risk_tier"] = assign_tiers(out["p_churn"], self.tiers)
        if self.segments is not None:
            for col, values in self.segments.assign(rfm).items():
                out[col] = values.to_numpy()
        for col in (*RFM_COLUMNS, "tenure_days"):
            out[col] = rfm[col].to_numpy()
        if self.explain is not None:
            out["top_reasons"] = reasons
            out["explain_method"] = method
        return pd.DataFrame(out)


def iter_scored_chunks(
    scorer: Scorer,
    *,
    source: str,
    path: str | None,
    cutoff: int,
    columns: Mapping[str, str] | None = None,
    users: pd.DataFrame | None = None,
    merge_same_day: bool | None = None,
    on_bad_rows: str = "raise",
    timestamp_format: str | None = None,
    max_value: float = MAX_VALUE,
    chunk_rows: int = 150_000,
    stream: str | bool = "auto",
    progress: bool = True,
    shard: tuple[int, int] | None = None,
) -> Iterator[pd.DataFrame]:
    """Stream the log in chunks of whole users and yield each chunk's predictions."""
    state = scorer.model.preprocessing
    merge = state.get("merge_same_day", False) if merge_same_day is None else merge_same_day
    total = (
        total_rows(path)
        if source == "events" and path is not None and Path(path).exists()
        else None
    )
    bar = tqdm(total=total, unit="rows", desc="predict", disable=not progress)
    first_day, last_day = None, None
    for chunk in iter_user_chunks(source, path, columns, chunk_rows, stream):
        check_columns(state, set(chunk.frame.columns))
        events, _ = clean_events(
            chunk.frame,
            on_bad_rows=on_bad_rows,
            merge_same_day=merge,
            header_lines=chunk.first_line - 1,
            timestamp_format=timestamp_format,
            max_value=max_value,
        )
        lo, hi = int(events["day"].min()), int(events["day"].max())
        first_day = lo if first_day is None else min(first_day, lo)
        last_day = hi if last_day is None else max(last_day, hi)
        bar.update(len(chunk.frame))
        if shard is not None:
            events = events[shard_mask(events["user_id"].to_numpy(dtype=object), *shard)]
        scored = scorer.score(events, cutoff, users)
        if len(scored):
            yield scored
    bar.close()
    if first_day is not None and not first_day <= cutoff <= last_day:
        raise DataError(
            f"cutoff {to_date(cutoff)} is outside the data ({to_date(first_day)} .. {to_date(last_day)})"
        )


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """ "i/n" -> (i, n) with 0 <= i < n; None stays None."""
    if shard is None:
        return None
    try:
        i, n = (int(x) for x in str(shard).split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise DataError(f"scoring.shard must be i/n with 0 <= i < n, such as 0/4; got {shard!r}")
    return i, n


def shard_mask(user_ids: np.ndarray, i: int, n: int) -> np.ndarray:
    """Rows whose user is in shard i of n: a stable hash of the id text, the same on any machine."""
    hashes = pd.util.hash_array(np.asarray(user_ids, dtype=object))  # ids are text
    return hashes % np.uint64(n) == np.uint64(i)


def scored_chunks(
    *,
    ckpt_path: str | Path,
    data: Mapping,
    cutoff: str | int | None = None,
    batch_size: int = 4096,
    chunk_rows: int = 150_000,
    stream: str | bool = "auto",
    explain: str | None = "grad_x_input",
    explain_steps: int = 32,
    accelerator: str | None = "auto",
    precision: str = "32-true",
    progress: bool = True,
    shard: str | None = None,
) -> tuple[Iterator[pd.DataFrame], int]:
    """Checkpoint + raw event log -> the prediction frames of DESIGN section 6, chunk by chunk.

    `data` is a conf/data/*.yaml node as a mapping; of it only `source`, `path`, `columns`,
    `users_path` and `on_bad_rows` are read, everything else comes from the checkpoint.
    `cutoff` is a date (or a day number); None scores at the checkpoint's test cutoff.
    `shard` "i/n" scores only the users of shard i of n (`shard_mask`), so a scheduler can
    split one log over n processes or machines and concatenate their files.
    Returns the (lazy) frames and the cutoff as a day number.
    """
    part = parse_shard(shard)
    check_settings(
        {"batch_size": batch_size, "chunk_rows": chunk_rows, "explain_steps": explain_steps},
        positive_int=True,
        prefix="scoring.",
    )
    device = resolve_device(accelerator)
    model = load_model(ckpt_path, device)
    state = model.preprocessing
    cutoff = scoring_cutoff(state, cutoff)
    explain = None if explain in (None, "none") else explain
    scorer = Scorer(model, device, batch_size, explainer(explain, explain_steps), precision)
    users_path = data.get("users_path")
    chunks = iter_scored_chunks(
        scorer,
        source=data["source"],
        path=data.get("path"),
        cutoff=cutoff,
        columns=data.get("columns"),
        users=read_users(users_path) if users_path else None,
        on_bad_rows=data.get("on_bad_rows", "raise"),
        timestamp_format=data.get("timestamp_format"),
        max_value=data.get("max_value", MAX_VALUE),
        chunk_rows=chunk_rows,
        stream=stream,
        progress=progress,
        shard=part,
    )
    return chunks, cutoff


def scoring_cutoff(state: Mapping, cutoff: str | int | None) -> int:
    """The day to score at: `cutoff` as given, or the checkpoint's test cutoff when None."""
    return to_day(state["test_cutoff"]) if cutoff is None else config_day(cutoff, "cutoff")


def predict_log(*, ckpt_path: str | Path, data: Mapping, output: str | Path, **scoring) -> dict:
    """`scored_chunks` (same keyword arguments) written to `output` atomically, in one pass.

    Returns a small summary: rows written, the output path and the cutoff.
    """
    check_outputs([output], [data.get("path"), data.get("users_path"), ckpt_path])
    chunks, cutoff = scored_chunks(ckpt_path=ckpt_path, data=data, **scoring)
    rows = write_predictions(chunks, output)
    return {"rows": rows, "output": str(output), "cutoff": to_date(cutoff)}

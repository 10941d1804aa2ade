"""CoLES-style self-supervised pretraining of an encoder's sequence part on random slices.

Contrastive Learning for Event Sequences (Babaev et al., SIGMOD 2022): two random contiguous
slices of one user's events are a positive pair, the other users of the batch are negatives,
and InfoNCE (losses.info_nce) trains the encoder's `sequence(batch)` through a projection head
that is discarded afterwards. train.py runs it before fine-tuning with the hazard head.

Data: one unlabeled snapshot at the test cutoff per user active by then, through the fitted
preprocessing: the last max_len events on or before the test cutoff, exactly what prediction at
that cutoff reads. No label and no event after the test cutoff enters. Every such user counts,
as a deployed model would pretrain on every customer's history to date: training users left out
by data.train_fraction (unlabeled histories are what pretraining is for) and, when
test_user_fraction > 0, the held-out test users, whose inputs the test scores anyway. Only the
users of the validation snapshots are left out: their events up to the test cutoff include
their validation label windows, and early stopping reads those labels.

Views: event types and the numeric channels of the sliced positions, as they are (the time
channels keep their values: CoLES slices raw sub-sequences). Summary and static features are
whole-history facts, the same in both views, that would make the task trivial: the views do
not carry them, so an encoder that reads them fails here instead of learning a shortcut.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

import torch
from torch import nn

from seqchurn.data.batches import BucketBatchSampler
from seqchurn.data.labels import make_snapshots
from seqchurn.data.sequences import (
    EVENT_TYPE,
    MASK,
    NUMERIC,
    PAD_ID,
    SnapshotDataset,
)
from seqchurn.errors import DataError, check_settings
from seqchurn.losses import info_nce
from seqchurn.models import encoder_class

log = logging.getLogger(__name__)


def has_sequence_part(encoder: nn.Module | type) -> bool:
    """Whether an encoder (instance or class) has the `sequence` hook that pretraining trains."""
    return callable(getattr(encoder, "sequence", None))


def pretraining_dataset(datamodule) -> SnapshotDataset:
    """Unlabeled inputs at the test cutoff of every user active by then, validation users out.

    Args:
        datamodule: a ChurnDataModule after setup (its cleaned events, event index, user
            table, preprocessor, cutoffs, snapshots and settings are read; nothing changes).
    """
    hp = datamodule.hparams
    events, index = datamodule.events, datamodule.index
    # obs_end=None: the prediction path, user ids and cutoffs with no label columns at all
    snaps = make_snapshots(
        events, [datamodule.test_cutoff], int(hp.horizon_days), None, index=index
    )
    snaps = snaps[~snaps["user_id"].isin(set(datamodule.snapshots["val"]["user_id"]))]
    if len(snaps) == 0:
        raise DataError("pretraining has no user: every user active by the test cutoff is in val")
    return datamodule.preprocessor.transform(index, snaps.reset_index(drop=True), datamodule.users)


def random_slices(
    batch: dict,
    n_views: int,
    min_frac: float,
    max_frac: float,
    min_events: int,
    generator: torch.Generator | None = None,
) -> tuple[dict, torch.Tensor]:
    """`n_views` random contiguous slices of every row's events, all rows at once.

    A slice of a row with L events has a length drawn uniformly from
    [max(ceil(min_frac L), min(min_events, L)), max(that, floor(max_frac L))] and a uniform
    start; it keeps the batch's layout (events left-aligned, mask True on them, padding id 0
    and numeric 0 after them).

    Args:
        batch: dict with EVENT_TYPE (B, T), NUMERIC (B, T, F) and MASK (B, T), left-aligned.
        generator: the source of the draws (on the batch's device), for reproducible views.

    Returns:
        (views, groups): views holds EVENT_TYPE, NUMERIC and MASK only, (n_views * B, T') with
        view v of row i at v * B + i; groups (n_views * B,) is that row i.
    """
    mask = batch[MASK]
    n_rows, device = mask.shape[0], mask.device
    groups = torch.arange(n_rows, device=device).repeat(n_views)  # (V*B,)
    lengths = mask.sum(dim=1)[groups]  # (V*B,)
    floor = torch.minimum(lengths, torch.full_like(lengths, min_events))
    share = lengths.double()  # float64, so 0.3 * 10 rounds as in Python, not to 3.0000001
    lo = torch.maximum(torch.ceil(share * min_frac).long(), floor)
    hi = torch.maximum(torch.floor(share * max_frac).long(), lo)
    u = torch.rand(2, len(groups), generator=generator, device=device, dtype=torch.float64)
    size = torch.minimum(lo + (u[0] * (hi - lo + 1)).long(), hi)  # (V*B,)
    start = (u[1] * (lengths - size + 1)).long().clamp(max=lengths - size)
    steps = torch.arange(int(size.max()) if len(size) else 0, device=device)
    keep = steps[None, :] < size[:, None]  # (V*B, T'), left-aligned like the batch
    src = (start[:, None] + steps[None, :]).clamp(max=max(mask.shape[1] - 1, 0))
    rows = groups[:, None]
    views = {
        EVENT_TYPE: torch.where(keep, batch[EVENT_TYPE][rows, src], PAD_ID),
        NUMERIC: batch[NUMERIC][rows, src] * keep[..., None],  # (V*B, T', F)
        MASK: keep,
    }
    return views, groups


class CoLES:
    """Contrastive pretraining of `encoder.sequence` on random slices (conf/pretrain/coles.yaml).

    Args:
        epochs, batch_size, lr, weight_decay: the pretraining loop's AdamW; batch_size users
            per step, each the others' negative.
        temperature: InfoNCE's.
        n_views: slices per user and step (>= 2).
        min_frac, max_frac: a slice's length as a share of the user's events.
        min_events: the shortest slice, for users with at least that many events.
        proj_dim: the projection head's output width.
        seed: of the weights of the head, the batches, the slices and dropout.
    """

    name = "coles"  # recorded as the fine-tuned model's hparams.pretrained

    def __init__(
        self,
        epochs: int = 20,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        temperature: float = 0.1,
        n_views: int = 2,
        min_frac: float = 0.3,
        max_frac: float = 0.9,
        min_events: int = 2,
        proj_dim: int = 64,
        seed: int = 0,
    ) -> None:
        sizes = {"epochs": epochs, "batch_size": batch_size, "min_events": min_events}
        check_settings({**sizes, "proj_dim": proj_dim}, positive_int=True, prefix="pretrain.")
        check_settings({"seed": seed}, positive_int=False, prefix="pretrain.")
        if not (isinstance(n_views, int) and n_views >= 2):
            raise DataError(f"pretrain.n_views must be an integer >= 2, got {n_views!r}")
        if not (0 < min_frac <= max_frac <= 1):
            raise DataError(
                f"pretrain.min_frac and max_frac need 0 < min_frac <= max_frac <= 1, "
                f"got {min_frac!r} and {max_frac!r}"
            )
        for key, value in {"lr": lr, "temperature": temperature}.items():
            if not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise DataError(f"pretrain.{key} must be a positive number, got {value!r}")
        self.epochs, self.batch_size, self.seed = epochs, batch_size, seed
        self.lr, self.weight_decay, self.temperature = lr, weight_decay, temperature
        self.n_views, self.proj_dim = n_views, proj_dim
        self.slicing = {"min_frac": min_frac, "max_frac": max_frac, "min_events": min_events}

    def check_encoder(self, name: str) -> None:
        """Refuse, before any data is read, an encoder (registry name or path) with no sequence."""
        try:
            cls = encoder_class(name)
        except ValueError:
            return  # building the model reports an unknown encoder in its own words
        if not has_sequence_part(cls):
            raise DataError(
                f"pretrain={self.name} needs an encoder with a sequence part (lstm, transformer); "
                f"model.encoder={name} has none"
            )

    def fit(
        self,
        encoder: nn.Module,
        dataset: SnapshotDataset,
        device: torch.device | str = "cpu",
        on_epoch: Callable[[int, float], None] | None = None,
    ) -> list[float]:
        """Train `encoder.sequence` in place; the mean contrastive loss of each epoch.

        The global random state comes out as it went in, so fine-tuning draws the same dropout
        masks with or without pretraining: only the starting weights differ.
        """
        if not has_sequence_part(encoder):
            raise DataError(f"pretrain={self.name}: {type(encoder).__name__} has no sequence part")
        device = torch.device(device)
        home = next(encoder.parameters()).device
        was_training = encoder.training
        forked = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=forked):
            torch.manual_seed(self.seed)
            width = encoder.sequence_dim
            head = nn.Sequential(
                nn.Linear(width, width), nn.ReLU(), nn.Linear(width, self.proj_dim)
            ).to(device)
            encoder.to(device).train()
            params = [*encoder.parameters(), *head.parameters()]
            opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
            draws = torch.Generator(device=device).manual_seed(self.seed)
            losses = [
                self._epoch(encoder, head, opt, params, dataset, epoch, draws, device, on_epoch)
                for epoch in range(self.epochs)
            ]
        encoder.to(home).train(was_training)
        return losses

    def _epoch(self, encoder, head, opt, params, dataset, epoch, draws, device, on_epoch) -> float:
        started = time.perf_counter()
        # Length buckets make the negatives as long as the anchor, so length alone cannot
        # tell users apart, and keep padding small.
        sampler = BucketBatchSampler(dataset.lengths, self.batch_size, shuffle=True, seed=self.seed)
        sampler.set_epoch(epoch)
        total, count = 0.0, 0
        for rows in sampler:
            rows = rows[dataset.lengths[rows] > 0]
            if len(rows) < 2:  # no negative to contrast with
                continue
            padded = dataset[rows]
            batch = {k: padded[k].to(device) for k in (EVENT_TYPE, NUMERIC, MASK)}
            views, groups = random_slices(batch, self.n_views, generator=draws, **self.slicing)
            loss = info_nce(head(encoder.sequence(views)), groups, self.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)  # as the fine-tuning trainer clips
            opt.step()
            total, count = total + loss.item() * len(rows), count + len(rows)
        mean = total / max(count, 1)
        log.info(
            "pretrain %s epoch %d/%d: loss %.4f over %d users in %.1fs",
            self.name,
            epoch + 1,
            self.epochs,
            mean,
            count,
            time.perf_counter() - started,
        )
        if on_epoch is not None:
            on_epoch(epoch, mean)
        return mean

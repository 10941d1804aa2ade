"""Batches of a SnapshotDataset: length buckets (shuffled per epoch for training), whole padded
batches as loader items."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from seqchurn.data.sequences import Y, SnapshotDataset


class BucketBatchSampler(Sampler):
    """Batches of similar length, so padding stays small; shuffled per epoch from a seed.

    Shuffling permutes rows, sorts each pool of `pool_batches` batches by length, cuts
    batches and shuffles their order. Without shuffling, batches follow length order, and
    with `max_tokens` a batch also stops at that many padded events (`_cut`).
    With `balance_labels` (training only) each epoch draws as many rows with replacement,
    each class equally likely, instead of a permutation; `row_weights` (recency) weight the
    draw the same way, and both multiply. Under DDP each rank takes every
    world_size-th row before batching (training rows padded so every rank steps as often).
    """

    def __init__(
        self,
        lengths,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        pool_batches: int = 50,
        balance_labels: np.ndarray | None = None,
        row_weights: np.ndarray | None = None,
        max_tokens: int | None = None,
    ):
        self.lengths = np.asarray(lengths)
        self.weights = None if row_weights is None else np.asarray(row_weights, np.float64)
        if balance_labels is not None:
            _, inverse, counts = np.unique(balance_labels, return_inverse=True, return_counts=True)
            self.weights = 1.0 / counts[inverse] * (1.0 if self.weights is None else self.weights)
        if self.weights is not None:
            self.weights = self.weights / self.weights.sum()
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.pool, self.epoch = pool_batches, 0
        self.max_tokens = max_tokens

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[np.ndarray]:
        rank, world = _rank_and_world()
        n = len(self.lengths)
        if not self.shuffle:
            # Every rank takes every world-th row of the length order: still bucketed, no row
            # scored twice, and no rank left empty while there are at least `world` rows.
            order = np.argsort(self.lengths, kind="stable")[rank::world]
            return _cut(order, self.lengths[order], self.batch_size, self.max_tokens)
        rng = np.random.default_rng([self.seed, self.epoch])
        perm = rng.permutation(n) if self.weights is None else rng.choice(n, size=n, p=self.weights)
        if world > 1:
            # DDP steps in lockstep: every rank needs as many batches, so as many rows (the
            # first rows of the permutation are drawn twice to fill the last round).
            perm = np.concatenate([perm, perm[: (-n) % world]])[rank::world]
        pool = self.batch_size * self.pool
        batches = []
        for i in range(0, len(perm), pool):
            chunk = perm[i : i + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [
                chunk[j : j + self.batch_size] for j in range(0, len(chunk), self.batch_size)
            ]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[np.ndarray]:
        # A generator: the epoch's order is drawn at the first batch, after set_epoch, even
        # when Lightning creates the iterator early (as it does when resuming).
        yield from self._batches()

    def __len__(self) -> int:
        return len(self._batches())


def _cut(order: np.ndarray, lengths: np.ndarray, size: int, max_tokens: int | None) -> list:
    """Consecutive batches of `order` (ascending `lengths`) of at most `size` rows and, past
    one row, `max_tokens` padded events: a batch pads to its longest row, and attention
    costs the square of that, so the long tail of a length order goes in smaller batches."""
    if max_tokens is None:
        return [order[i : i + size] for i in range(0, len(order), size)]
    batches, start = [], 0
    while start < len(order):
        k = np.arange(1, min(size, len(order) - start) + 1)
        # rows x the last row's length grows with k: the rows that fit are a prefix
        fits = k * np.maximum(lengths[start : start + len(k)], 1) <= max_tokens
        take = max(int(fits.sum()), 1)
        batches.append(order[start : start + take])
        start += take
    return batches


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _as_is(batch: dict) -> dict:
    # The dataset returns whole batches; the default collate would walk every user id.
    return batch


def make_loader(
    dataset: SnapshotDataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    balanced: bool = False,
    row_weights: np.ndarray | None = None,
    max_tokens: int | None = None,
) -> DataLoader:
    """A DataLoader whose items are whole padded batches drawn by length bucket (class-balanced
    or weighted by row on request)."""
    labels = dataset.labels[Y].numpy() if balanced else None
    sampler = BucketBatchSampler(
        dataset.lengths,
        batch_size,
        shuffle=shuffle,
        seed=seed,
        balance_labels=labels,
        row_weights=row_weights,
        max_tokens=max_tokens,
    )
    return DataLoader(
        dataset,
        sampler=sampler,
        batch_size=None,
        collate_fn=_as_is,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        # Its own generator: creating an iterator must not draw from the global one that
        # dropout uses, or a resumed run would drift from an uninterrupted one.
        generator=torch.Generator().manual_seed(seed),
    )

"""Input pieces shared by the encoders: event embedding, static embedding, user-level features."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from seqchurn.data.sequences import PAD_ID, STATIC, SUMMARY


@dataclass(frozen=True)
class InputSizes:
    """Sizes learned from the data that every encoder is built from (its first argument).

    n_event_types counts the padding and unknown ids; n_numeric is the number of sequence
    channels; static_cardinalities has one entry per static column (id 0 = unknown).
    """

    n_event_types: int
    n_numeric: int
    n_summary: int
    static_cardinalities: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "static_cardinalities", tuple(self.static_cardinalities))


class EventInputEmbedding(nn.Module):
    """Event type embedding + numeric projection: (B, T) ids, (B, T, F) -> (B, T, d_model)."""

    def __init__(
        self, sizes: InputSizes, d_model: int, combine: str = "sum", dropout: float = 0.0
    ) -> None:
        super().__init__()
        if combine not in ("sum", "concat"):
            raise ValueError(f"combine must be 'sum' or 'concat', got {combine!r}")
        self.combine = combine
        self.type_emb = nn.Embedding(sizes.n_event_types, d_model, padding_idx=PAD_ID)
        self.numeric_proj = nn.Linear(sizes.n_numeric, d_model)
        self.out_proj = nn.Linear(2 * d_model, d_model) if combine == "concat" else nn.Identity()
        self.dropout = nn.Dropout(dropout)

    def forward(self, event_type: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        e, x = self.type_emb(event_type), self.numeric_proj(numeric)
        out = (
            e + x if self.combine == "sum" else self.out_proj(torch.cat([e, x], dim=-1))
        )  # (B, T, d)
        return self.dropout(out)


class StaticEmbedding(nn.Module):
    """One embedding per static column, concatenated: (B, A) long -> (B, A * dim)."""

    def __init__(self, cardinalities: Sequence[int], dim: int = 4) -> None:
        super().__init__()
        # id 0 = unknown is a real, learned category here, so no padding_idx
        self.embs = nn.ModuleList(nn.Embedding(int(c), dim) for c in cardinalities)
        self.out_dim = dim * len(self.embs)

    def forward(
        self, static: torch.Tensor | None, batch_size: int, device: torch.device | None = None
    ) -> torch.Tensor:
        if not self.embs:
            return torch.zeros(batch_size, 0, device=device)
        if static is None or static.dim() != 2 or static.shape[1] != len(self.embs):
            got = None if static is None else tuple(static.shape)
            raise ValueError(
                f"static must be (B, {len(self.embs)}) long, got {got}; match static_cardinalities"
            )
        return torch.cat(
            [emb(static[:, j]) for j, emb in enumerate(self.embs)], dim=-1
        )  # (B, A*dim)


class UserFeatures(nn.Module):
    """Whole-history user features: concat(summary if used, static embeddings) -> (B, out_dim)."""

    def __init__(self, sizes: InputSizes, static_dim: int = 4, use_summary: bool = True) -> None:
        super().__init__()
        self.use_summary = use_summary
        self.n_summary = n_summary = sizes.n_summary
        self.static = StaticEmbedding(sizes.static_cardinalities, static_dim)
        self.out_dim = (n_summary if use_summary else 0) + self.static.out_dim

    def forward(self, batch: dict) -> torch.Tensor:
        summary = batch[SUMMARY]
        if summary.dim() != 2 or summary.shape[1] != self.n_summary:
            raise ValueError(
                f"summary must be (B, {self.n_summary}), got {tuple(summary.shape)}; fix n_summary"
            )
        parts = [summary.float()] if self.use_summary else []
        parts.append(self.static(batch.get(STATIC), summary.shape[0], summary.device))
        return torch.cat(parts, dim=-1)  # (B, out_dim)

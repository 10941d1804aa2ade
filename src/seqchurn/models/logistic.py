"""Summary baseline, no sequence: with the linear hazard head, a logistic regression per bin."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seqchurn.models.common import UserFeatures


class LogisticEncoder(nn.Module):
    """User vector = concat(summary, static embeddings): batch -> (B, out_dim)."""

    # explain/ reads this and `embeddings` instead of recognizing the class: the user vector is
    # concat(summary, static embeddings) unchanged, so the head's weights are the coefficients.
    linear_inputs = True

    def __init__(
        self,
        n_event_types: int,
        n_numeric: int,
        n_summary: int,
        static_cardinalities: Sequence[int] = (),
        static_dim: int = 4,
    ) -> None:
        super().__init__()
        # n_event_types / n_numeric are accepted so every encoder is built from the same sizes dict
        self.user = UserFeatures(n_summary, static_cardinalities, static_dim, use_summary=True)
        self.out_dim = self.user.out_dim

    @property
    def embeddings(self) -> tuple[nn.Embedding | None, list[nn.Embedding]]:
        """(event-type embedding or None, static embeddings): the outputs explain/ attributes to."""
        return None, list(self.user.static.embs)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.user(batch)

"""Summary baseline, no sequence: with the linear hazard head, a logistic regression per bin."""

from __future__ import annotations

import torch
from torch import nn

from seqchurn.models.common import InputSizes, UserFeatures


class LogisticEncoder(nn.Module):
    """User vector = concat(summary, static embeddings): batch -> (B, out_dim)."""

    # explain/ reads this and `embeddings` instead of recognizing the class: the user vector is
    # concat(summary, static embeddings) unchanged, so the head's weights are the coefficients.
    linear_inputs = True

    def __init__(self, sizes: InputSizes, static_dim: int = 4) -> None:
        super().__init__()
        self.user = UserFeatures(sizes, static_dim, use_summary=True)
        self.out_dim = self.user.out_dim

    @property
    def embeddings(self) -> tuple[nn.Embedding | None, list[nn.Embedding]]:
        """(event-type embedding or None, static embeddings): the outputs explain/ attributes to."""
        return None, list(self.user.static.embs)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.user(batch)

"""Small heads that turn a task's decoded queries into its raw output (B, labels, K)."""

from __future__ import annotations

import torch
from torch import nn


class TaskHead(nn.Module):
    """With one query per label (Q-Face) one linear layer is shared by the task's queries, so each label's
    answer comes from its own query. With one shared query per task (the ablation) that single query is mapped
    to every label at once."""

    def __init__(self, dim: int, num_labels: int, width: int, query_per_label: bool = True):
        super().__init__()
        self.num_labels, self.width = num_labels, width
        self.linear = nn.Linear(dim, width if query_per_label else num_labels * width)

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        return self.linear(queries).reshape(queries.shape[0], self.num_labels, self.width)

"""Task-adaptive decoder: one learnable query per output label attends to the fused face tokens.

Self-attention runs only among queries of the same task. That keeps tasks from leaking into each other at
inference, so running a subset of tasks runs only their queries and returns exactly what a full run returns.
"""

from __future__ import annotations

import torch
from torch import nn


class DecoderLayer(nn.Module):
    """Pre-norm: self-attention among a task's queries → cross-attention to the face → feed-forward."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def attend_within_tasks(self, queries: torch.Tensor, task_sizes: list[int]) -> torch.Tensor:
        """Self-attention run task by task over their consecutive query blocks: the same as one attention with a
        block-diagonal mask, at the cost of the blocks instead of the whole square (half the decoder's time)."""
        x = self.norms[0](queries)
        attended = [self.self_attn(part, part, part, need_weights=False)[0] for part in x.split(task_sizes, dim=1)]
        return queries + self.dropout(torch.cat(attended, dim=1))

    def attend_to_face(self, queries: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, attention = self.cross_attn(self.norms[1](queries), tokens, tokens, need_weights=True)
        queries = queries + self.dropout(attended)
        queries = queries + self.dropout(self.ffn(self.norms[2](queries)))
        return queries, attention  # attention: (B, Q, tokens), averaged over heads, each row sums to 1


class TaskAdaptiveDecoder(nn.Module):
    """A stack of DecoderLayers over learnable label queries (one per output label, grouped by task). Each query
    reads the face through its own cross-attention, so every label looks where its evidence is, and the maps that
    says where are returned for inspection."""

    def __init__(self, num_queries: int, dim: int, layers: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ffn_dim, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, tokens: torch.Tensor, query_ids: torch.Tensor, task_sizes: list[int]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`query_ids` picks the queries to run, grouped by task in consecutive blocks of `task_sizes`.
        Returns the decoded queries (B, Q, dim) and every layer's cross-attention maps."""
        # One row until the first cross-attention: before they read the face, the queries are the same for every
        # face, so the first self-attention runs once instead of once per face.
        queries = self.queries[query_ids].unsqueeze(0)
        attention_maps = []
        for layer in self.layers:
            queries = layer.attend_within_tasks(queries, task_sizes)
            queries, attention = layer.attend_to_face(queries.expand(tokens.shape[0], -1, -1), tokens)
            attention_maps.append(attention)
        return self.norm(queries), attention_maps

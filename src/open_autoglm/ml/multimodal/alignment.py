"""Alignment: both modalities projected to one shared width, then a cross-modal attention block.

The text encoder gives one vector per row, the tabular encoder one token per column. The
projection turns the text vector into ``text_tokens`` tokens and each tabular token into the
shared width; then text tokens attend over the tabular tokens and tabular tokens over the
text tokens (each with a residual and LayerNorm), so each side is re-read in the light of
the other. A row missing a modality gets no message from it: the attention output is gated
by the other side's presence (a mask over every key would give NaN rows in softmax).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["Alignment", "CrossModalAttention"]


class CrossModalAttention(nn.Module):
    """``queries`` (batch, q, dim) attend over ``keys`` (batch, k, dim); residual + LayerNorm."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm_ffn = nn.LayerNorm(dim)

    def forward(self, queries: Tensor, keys: Tensor, keys_present: Tensor) -> Tensor:
        message, _ = self.attention(queries, keys, keys, need_weights=False)  # (batch, q, dim)
        gate = keys_present[:, None, None].to(message.dtype)  # (batch, 1, 1)
        hidden = self.norm(queries + gate * message)
        out: Tensor = self.norm_ffn(hidden + self.ffn(hidden))  # (batch, q, dim)
        return out


class Alignment(nn.Module):
    """Text vector (batch, text_hidden) and tabular tokens (batch, columns, token_dim) ->
    aligned text (batch, shared) and tabular (batch, shared) vectors."""

    def __init__(
        self,
        text_hidden: int,
        token_dim: int,
        shared: int,
        *,
        text_tokens: int,
        heads: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.text_tokens = text_tokens
        self.shared = shared
        self.project_text = nn.Linear(text_hidden, text_tokens * shared)
        self.project_tabular = nn.Linear(token_dim, shared)
        self.text_reads_tabular = CrossModalAttention(shared, heads, dropout)
        self.tabular_reads_text = CrossModalAttention(shared, heads, dropout)

    def forward(
        self, text: Tensor, text_present: Tensor, tokens: Tensor, tab_present: Tensor
    ) -> tuple[Tensor, Tensor]:
        t = self.project_text(text).view(-1, self.text_tokens, self.shared)  # (batch, T, shared)
        a = self.project_tabular(tokens)  # (batch, columns, shared)
        t2 = self.text_reads_tabular(t, a, tab_present)  # (batch, T, shared)
        a2 = self.tabular_reads_text(a, t, text_present)  # (batch, columns, shared)
        return t2.mean(dim=1), a2.mean(dim=1)  # (batch, shared) each

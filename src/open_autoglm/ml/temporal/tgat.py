"""TGAT (Xu et al. 2020): attention over temporal neighbours with a functional time encoding.

Layer ``l`` embeds a node ``v`` at time ``t`` by attending from ``[h_{l-1}(v, t) | phi(0)]``
to its sampled neighbours ``[h_{l-1}(u, t_u) | e_uv | phi(t - t_u)]`` (all ``t_u < t``), then
merging the result with ``h_{l-1}(v, t)`` through an MLP. Nodes carry no input features here
(``h_0 = 0``, as TGAT does for Wikipedia), so identity enters only through the pair features
of the decoder (``cooccurrence``, see ``decoder.py``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from open_autoglm.ml.temporal.decoder import LinkDecoder, cooccurrence
from open_autoglm.ml.temporal.history import EventHistory
from open_autoglm.ml.temporal.models import TemporalModelConfig
from open_autoglm.ml.temporal.sampler import NeighborStrategy, TemporalNeighbors
from open_autoglm.ml.temporal.time_encoding import TimeEncoding

__all__ = ["TGAT"]


class TGAT(nn.Module):
    """Temporal graph attention network with a link decoder."""

    def __init__(self, cfg: TemporalModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, td, ed = cfg.dim, cfg.time_dim, cfg.edge_dim
        self.time_enc = TimeEncoding(td)
        self.attn = nn.ModuleList(
            nn.MultiheadAttention(
                d + td,
                cfg.heads,
                dropout=cfg.dropout,
                kdim=d + ed + td,
                vdim=d + ed + td,
                batch_first=True,
            )
            for _ in range(cfg.layers)
        )
        self.merge = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * d + td, d), nn.ReLU(), nn.Linear(d, d))
            for _ in range(cfg.layers)
        )
        self.decoder = LinkDecoder(d, pair=cfg.cooccurrence)
        self.history: EventHistory | None = None
        self.rng = np.random.default_rng(0)

    # the stateful-model protocol (TGN keeps memory; TGAT reads only the history)
    def set_history(self, history: EventHistory) -> None:
        self.history = history

    def reset_state(self) -> None:
        pass

    def observe(self, src: Tensor, dst: Tensor, t: npt.NDArray[np.float64], eids: Tensor) -> None:
        pass

    def detach_state(self) -> None:
        pass

    def _neighbors(
        self, nodes: npt.NDArray[np.int64], times: npt.NDArray[np.float64]
    ) -> TemporalNeighbors:
        if self.history is None:
            raise RuntimeError("TGAT needs set_history() before scoring")
        nb = self.history.sampler.sample(
            nodes, times, self.cfg.neighbors, NeighborStrategy(self.cfg.strategy), self.rng
        )
        if self.training and self.cfg.drop_edge > 0:  # DropEdge on the temporal neighbourhood
            keep = self.rng.random(nb.mask.shape) >= self.cfg.drop_edge
            nb = TemporalNeighbors(nb.nodes, nb.times, nb.events, nb.mask & keep)
        return nb

    def embed(
        self, nodes: npt.NDArray[np.int64], times: npt.NDArray[np.float64], layer: int | None = None
    ) -> Tensor:
        """Embeddings (Q, dim) of ``nodes`` at ``times`` from events strictly before them."""
        layer = self.cfg.layers if layer is None else layer
        q = nodes.size
        if layer == 0:
            return torch.zeros(q, self.cfg.dim)
        h_self = self.embed(nodes, times, layer - 1)  # (Q, d)
        nb = self._neighbors(nodes, times)
        k = nb.mask.shape[1]
        h_nb = self.embed(nb.nodes.reshape(-1), nb.times.reshape(-1), layer - 1).view(q, k, -1)
        assert self.history is not None
        e = self.history.features[torch.from_numpy(nb.events)]  # (Q, k, edge_dim)
        dt = torch.from_numpy((times[:, None] - nb.times).astype(np.float32))  # (Q, k) > 0
        keys = torch.cat([h_nb, e, self.time_enc(dt)], dim=-1)  # (Q, k, d + ed + td)
        query = torch.cat([h_self, self.time_enc(torch.zeros(q))], dim=-1).unsqueeze(1)
        mask = torch.from_numpy(nb.mask)  # (Q, k)
        lonely = ~mask.any(dim=1)  # (Q,) no past events: attention would be all-masked
        pad = ~mask
        pad[lonely, 0] = False
        out, _ = self.attn[layer - 1](query, keys, keys, key_padding_mask=pad, need_weights=False)
        out = out.squeeze(1).masked_fill(lonely[:, None], 0.0)  # (Q, d + td)
        merged: Tensor = self.merge[layer - 1](torch.cat([out, h_self], dim=-1))  # (Q, d)
        return merged

    def _pair_features(
        self, src: npt.NDArray[np.int64], dst: npt.NDArray[np.int64], t: npt.NDArray[np.float64]
    ) -> Tensor:
        nb_s, nb_d = self._neighbors(src, t), self._neighbors(dst, t)
        return cooccurrence(src, dst, nb_s.nodes, nb_s.mask, nb_d.nodes, nb_d.mask)

    def forward(self, src: Tensor, dst: Tensor, t: npt.NDArray[np.float64]) -> Tensor:
        """Logits (B,) that ``src`` links to ``dst`` at ``t``."""
        s, d = src.numpy(), dst.numpy()
        h = self.embed(np.concatenate([s, d]), np.concatenate([t, t]))  # (2B, dim)
        b = s.size
        pair = self._pair_features(s, d, t) if self.cfg.cooccurrence else None
        logits: Tensor = self.decoder(h[:b], h[b:], pair)
        return logits

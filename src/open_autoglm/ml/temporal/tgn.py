"""TGN (Rossi et al. 2020) on PyG's temporal parts: TGNMemory, LastNeighborLoader, TimeEncoder.

Each node keeps a memory vector updated by a GRU from the messages of its past events; an
embedding module attends over the node's most recent neighbours (``LastNeighborLoader``)
with edge attributes ``[TimeEncoder(t_last - t_event) | event features]``. The stream is
processed in chronological batches: a batch is scored from the state left by the batches
before it, then ``observe`` writes it into memory, so no event informs its own score.
PyG's memory cannot take zero-width messages; :class:`EventHistory` gives featureless
streams a constant zero feature of width 1. Integer time units are used (times are taken
relative to the history's first event and rounded), as PyG's memory requires.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn
from torch_geometric.nn import TransformerConv
from torch_geometric.nn.models.tgn import (
    IdentityMessage,
    LastAggregator,
    LastNeighborLoader,
    TGNMemory,
    TimeEncoder,
)

from open_autoglm.ml.temporal.decoder import LinkDecoder, cooccurrence
from open_autoglm.ml.temporal.history import EventHistory
from open_autoglm.ml.temporal.models import TemporalModelConfig

__all__ = ["TGN", "TGNEmbedding"]

# Buffers that hold per-node state: rebuilt by replaying events, never saved as weights.
STATE_KEYS = ("memory.memory", "memory.last_update", "memory._assoc")


class TGNEmbedding(nn.Module):
    """Graph attention over the last neighbours, edge attributes = time gap + event features."""

    def __init__(self, in_dim: int, out_dim: int, msg_dim: int, time_enc: TimeEncoder) -> None:
        super().__init__()
        self.time_enc = time_enc
        edge_dim = msg_dim + time_enc.out_channels
        self.conv = TransformerConv(in_dim, out_dim // 2, heads=2, dropout=0.1, edge_dim=edge_dim)

    def forward(
        self, x: Tensor, last_update: Tensor, edge_index: Tensor, t: Tensor, msg: Tensor
    ) -> Tensor:
        rel_t = last_update[edge_index[0]] - t  # (edges,)
        rel_t_enc = self.time_enc(rel_t.to(x.dtype))  # (edges, time_dim)
        edge_attr = torch.cat([rel_t_enc, msg], dim=-1)
        out: Tensor = self.conv(x, edge_index, edge_attr)  # (nodes, out_dim)
        return out


class TGN(nn.Module):
    """Memory + attention embedding + link decoder; stateful across :meth:`observe` calls."""

    def __init__(self, cfg: TemporalModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ed, d = cfg.edge_dim, cfg.dim
        self.memory = TGNMemory(
            cfg.num_nodes, ed, d, cfg.time_dim,
            message_module=IdentityMessage(ed, d, cfg.time_dim),
            aggregator_module=LastAggregator(),
        )  # fmt: skip
        self.gnn = TGNEmbedding(d, d, ed, self.memory.time_enc)
        self.decoder = LinkDecoder(d, pair=cfg.cooccurrence)
        self.loader = LastNeighborLoader(cfg.num_nodes, size=cfg.neighbors)
        self._assoc = torch.empty(cfg.num_nodes, dtype=torch.long)
        self._loader_eids: list[Tensor] = []  # loader's running event number -> event id
        self._eid_map = torch.zeros(0, dtype=torch.long)
        self.history: EventHistory | None = None
        self._t0 = 0.0

    def set_history(self, history: EventHistory) -> None:
        self.history = history
        self._t0 = float(history.t.min()) if history.t.size else 0.0

    def _int_time(self, t: npt.NDArray[np.float64]) -> Tensor:
        return torch.from_numpy(np.rint(np.asarray(t) - self._t0).astype(np.int64))

    def reset_state(self) -> None:
        self.memory.reset_state()
        self.loader.reset_state()
        self._loader_eids = []
        self._eid_map = torch.zeros(0, dtype=torch.long)

    def detach_state(self) -> None:
        self.memory.detach()

    @torch.no_grad()
    def observe(self, src: Tensor, dst: Tensor, t: npt.NDArray[np.float64], eids: Tensor) -> None:
        """Write a batch of events into memory and the neighbour loader."""
        if self.history is None:
            raise RuntimeError("TGN needs set_history() before observe()")
        self.memory.update_state(src, dst, self._int_time(t), self.history.features[eids])
        self.loader.insert(src, dst)
        self._loader_eids.append(eids)
        self._eid_map = torch.cat(self._loader_eids)
        self._loader_eids = [self._eid_map]

    def embed(self, nodes: Tensor) -> tuple[Tensor, Tensor]:
        """Embeddings (len(n_id), dim) of the nodes and their loaded neighbours; n_id."""
        if self.history is None:
            raise RuntimeError("TGN needs set_history() before scoring")
        n_id, edge_index, e_id = self.loader(nodes)
        self._assoc[n_id] = torch.arange(n_id.size(0))
        z, last_update = self.memory(n_id)  # (n, d), (n,)
        events = self._eid_map[e_id]
        t = self._int_time(self.history.t[events.numpy()])
        z = self.gnn(z, last_update, edge_index, t, self.history.features[events])
        return z, n_id

    def forward(self, src: Tensor, dst: Tensor, t: npt.NDArray[np.float64]) -> Tensor:
        """Logits (B,) from the current state (``t`` is implied by the state)."""
        z, _ = self.embed(torch.unique(torch.cat([src, dst])))
        pair = None
        if self.cfg.cooccurrence:  # the loader holds only observed (past) events
            nbr, eid = self.loader.neighbors, self.loader.e_id
            pair = cooccurrence(
                src.numpy(), dst.numpy(), nbr[src].numpy(), (eid[src] >= 0).numpy(),
                nbr[dst].numpy(), (eid[dst] >= 0).numpy(),
            )  # fmt: skip
        logits: Tensor = self.decoder(z[self._assoc[src]], z[self._assoc[dst]], pair)
        return logits

    def weights(self) -> dict[str, Tensor]:
        """Learned parameters only; node state is rebuilt from the event store."""
        return {k: v for k, v in self.state_dict().items() if k not in STATE_KEYS}

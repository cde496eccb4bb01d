"""Chronological split with unseen nodes, the protocol of TGAT, TGN and DyGLib.

Events up to the 70% time quantile train, up to 85% validate, the rest test. A random 10% of
all nodes among those active in validation or test are held out: every training event that
touches one is removed, so they are truly unseen. Inductive evaluation scores the validation
and test events that touch any node absent from the training events.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from open_autoglm.spec.events import EventStream

__all__ = ["ChronologicalSplit", "chronological_split"]

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class ChronologicalSplit:
    """Masks over the stream's events (E,) and the times that separate the parts."""

    train: BoolArray  # (E,) training events (held-out nodes removed)
    val: BoolArray  # (E,) all events in the validation period
    test: BoolArray  # (E,) all events in the test period
    new_node_val: BoolArray  # (E,) validation events touching a node unseen in training
    new_node_test: BoolArray  # (E,)
    val_time: float
    test_time: float
    train_nodes: BoolArray  # (N,) nodes that occur in training events

    @property
    def last_train_time(self) -> float:
        return self.val_time


def chronological_split(
    stream: EventStream,
    val_ratio: float = 0.15,
    test_ratio: float = 0.15,
    new_node_ratio: float = 0.1,
    seed: int = 2020,
) -> ChronologicalSplit:
    """Split ``stream`` by time quantiles; ``seed`` picks the held-out nodes."""
    t = stream.t
    val_time, test_time = np.quantile(t, [1.0 - val_ratio - test_ratio, 1.0 - test_ratio])
    later = t > val_time
    active = np.unique(np.concatenate([stream.src[later], stream.dst[later]]))
    rng = np.random.default_rng(seed)
    n_new = min(active.size, int(new_node_ratio * stream.num_nodes))
    held = np.zeros(stream.num_nodes, dtype=np.bool_)
    held[rng.choice(active, size=n_new, replace=False)] = True
    train = (t <= val_time) & ~held[stream.src] & ~held[stream.dst]
    train_nodes = np.zeros(stream.num_nodes, dtype=np.bool_)
    train_nodes[stream.src[train]] = True
    train_nodes[stream.dst[train]] = True
    unseen = ~train_nodes[stream.src] | ~train_nodes[stream.dst]
    val = (t > val_time) & (t <= test_time)
    test = t > test_time
    return ChronologicalSplit(
        train=train,
        val=val,
        test=test,
        new_node_val=val & unseen,
        new_node_test=test & unseen,
        val_time=float(val_time),
        test_time=float(test_time),
        train_nodes=train_nodes,
    )

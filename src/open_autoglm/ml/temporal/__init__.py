"""Temporal graph learning: link prediction on event streams.

One concept per module: ``sampler.py`` (neighbours strictly before a query time),
``time_encoding.py`` (Bochner functional time encoding), ``tgat.py``, ``tgn.py`` and
``edgebank.py`` (the models), ``models.py`` (their registry), ``split.py`` (chronological
split with unseen nodes), ``negatives.py`` (random, historical and inductive negatives),
``metrics.py`` (AP, ROC-AUC), ``evaluation.py`` (the streaming protocol), ``training.py``
(the loop), ``bundle.py`` (event store and weights), ``curves.py`` (PNG of training curves).
Nothing is imported here, so importing the package does not import torch.
"""

__all__: list[str] = []

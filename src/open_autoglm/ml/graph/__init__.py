"""Graph learning: GNN node classifiers, neighbor sampling, single and multi-process training.

One concept per module, PyG style: ``gcn.py``/``sage.py``/``gat.py`` (one model each),
``models.py`` (the registry), ``data.py`` (tensors from a validated graph), ``sampler.py``
(CSR neighbor sampling), ``training.py`` (the loop), ``parallel.py`` (sync DDP / async
Hogwild), ``bundle.py`` (safetensors/npz/JSON), ``curves.py`` (PNG of training curves).
Nothing is imported here, so importing the package does not import torch.
"""

__all__: list[str] = []

"""Model workers: a model served by a pool of single-threaded copies (processes or Ray actors).

``codec`` (frames and operations), ``split_merge`` (requests across workers), ``base`` (what
a worker is), ``process`` and ``ray_actor`` (two kinds of worker), ``zygote`` (the pre-imported
process that process workers fork from), ``pool`` (dispatch) and
``child`` (the worker's own side). Not to be confused with server replicas holding a lease
(``storage/replicas.py``).
"""

__all__: list[str] = []

"""Float32 ``nn.Linear`` layers computed by oneDNN with prepacked weights, on CPU.

An encoder forward on CPU is almost all matrix products: in MiniLM ``aten::addmm`` takes 89% of
the time. PyTorch sends float32 ``Linear`` to MKL's sgemm, and MKL picks its AVX-512 kernels
only on Intel CPUs; on this machine's AMD EPYC (Zen 4, AVX-512) it ran at ~115 GFLOPS per core
where oneDNN, which ships inside the same torch wheel and picks kernels by the CPU's features,
ran the same product at ~250 (``benchmarks/serving.py`` records the effect end to end).

:func:`use_onednn_linears` swaps a model's float32 ``Linear`` modules for :class:`OneDNNLinear`,
which keeps the ``weight`` and ``bias`` parameters (``state_dict``, ``dtype`` and tied weights
behave as before) plus a copy of the weight packed once in oneDNN's blocked layout, and
computes ``x @ W.T + b`` with ``torch.ops.mkldnn._linear_pointwise``, the op TorchInductor's
CPU backend emits for the same purpose. Serving models are frozen: the packed copy is not
updated if the weights change, so this is for inference only.

oneDNN compiles and caches a kernel per input shape, so inputs are padded to one of a few
row counts (:func:`row_bucket`): without that, a server meeting thousands of text-count x
length combinations grew by gigabytes and recompiled once past oneDNN's cache.

Rows are independent bit for bit: a row's output is the same whatever other rows share the
call (measured for every shape SmolLM2 and MiniLM use, 1 to 520 rows; ``tests/ml/text/
test_linear.py`` keeps it so). torch's own path does not have this property: a single row
goes through MKL's gemv, several through its gemm, which sum in a different order. It is
what lets generation batch requests and still give each the output it gets alone, and the
decode steps (a few rows against large weights) ran ~2x faster for SmolLM2-135M.

The op is internal to PyTorch, so the swap checks it first: it must exist and match
``F.linear`` on a probe; otherwise models keep the stock layers (and a log line says why).

On Intel CPUs MKL does pick its AVX-512 kernels, and there oneDNN did not pay: on a 2-core
Xeon (AVX-512, AMX) MiniLM's packed forward ran 7-15% faster with torch's own Linears, though
each Linear timed alone was about as fast either way. So an embedding model loaded with
``auto`` times its own forward both ways (:class:`LinearChoice`, used by
``ml/text/tuning.py``) and keeps the faster. Generation keeps oneDNN wherever it is
usable, for the invariance above.
"""

from __future__ import annotations

import copy
import functools
import logging
from typing import Any

import torch

from open_autoglm.errors import ValidationError
from open_autoglm.spec.model import LINEAR_MODES

__all__ = [
    "LinearChoice",
    "OneDNNLinear",
    "onednn_available",
    "row_bucket",
    "use_onednn_linears",
]

log = logging.getLogger(__name__)


class OneDNNLinear(torch.nn.Linear):
    """An ``nn.Linear`` whose forward runs oneDNN on a prepacked copy of its weight.

    Inference only: the output carries no gradient, and the packed copy does not follow
    later changes to ``weight``.
    """

    def __init__(self, linear: torch.nn.Linear) -> None:
        torch.nn.Module.__init__(self)
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        with torch.no_grad():
            # Packed for a typical batch x sequence row count; any row count works.
            self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), 256)

    def __deepcopy__(self, memo: dict[int, Any]) -> OneDNNLinear:
        # The packed copy is an opaque oneDNN tensor that copy.deepcopy cannot copy: repack.
        plain = torch.nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        plain.weight = copy.deepcopy(self.weight, memo)
        plain.bias = copy.deepcopy(self.bias, memo)
        return OneDNNLinear(plain)

    @property
    def packed_bytes(self) -> int:
        """The packed copy's size (the same elements as ``weight``, another layout)."""
        return int(self.weight.numel() * self.weight.element_size())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.detach()
        lead = x.shape[:-1]
        m = x.numel() // self.in_features
        padded = row_bucket(m)
        if padded == m:
            rows = x.reshape(m, self.in_features)
        else:  # a bounded set of shapes: see row_bucket
            rows = torch.nn.functional.pad(x.reshape(m, -1), (0, 0, 0, padded - m))
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
            rows, self.packed, bias, "none", [], ""
        )
        return out[:m].reshape(*lead, self.out_features)


def row_bucket(m: int) -> int:
    """``m`` rounded up to one of a few row counts (at most 7 rows or 1/8 more).

    oneDNN compiles a kernel per input shape (~2-3 ms) and caches it with its scratch memory
    (~0.7 MB each, 1024 by default). An encoder's rows are texts x padded length, thousands of
    different counts: over 3,000 distinct shapes a process grew by 2 GB, and once past the
    cache it recompiled on every call. Rounded rows (steps of 8 up to 128, 16 up to 512, 32
    up to 2048, 128 up to 8192, then 512) keep it to ~140 shapes per weight up to 8192 rows.
    The price, padding each Linear's input to its bucket, measured 5-13% against exact shapes
    with a warm cache.
    """
    step = 8 if m <= 128 else 16 if m <= 512 else 32 if m <= 2048 else 128 if m <= 8192 else 512
    return -(-m // step) * step


@functools.cache
def onednn_available() -> tuple[bool, str]:
    """(usable, reason): the oneDNN linear op exists here and agrees with ``F.linear``."""
    if not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        return False, "this torch build has no oneDNN (mkldnn)"
    try:
        probe = torch.nn.Linear(48, 40)
        x = torch.randn(2, 7, 48)
        with torch.inference_mode():
            got = OneDNNLinear(probe)(x)
            want = torch.nn.functional.linear(x, probe.weight, probe.bias)
    except (RuntimeError, AttributeError, TypeError) as exc:
        return False, f"oneDNN linear op unusable: {exc}"
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
        return False, "oneDNN linear op disagrees with F.linear on a probe"
    return True, "ok"


def use_onednn_linears(model: Any, mode: str = "auto") -> int:
    """Swap ``model``'s float32 CPU ``nn.Linear`` layers in place; returns how many.

    ``mode``: ``"auto"`` swaps when oneDNN is usable, ``"onednn"`` requires it (ValidationError
    otherwise), ``"torch"`` leaves the model alone.
    """
    if mode not in LINEAR_MODES:
        raise ValidationError(f"options.linear must be one of {list(LINEAR_MODES)}, not {mode!r}")
    if mode == "torch":
        return 0
    usable, reason = onednn_available()
    if not usable:
        if mode == "onednn":
            raise ValidationError(f"options.linear 'onednn' is not available: {reason}")
        log.info("keeping torch's Linear layers: %s", reason)
        return 0
    swaps = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is torch.nn.Linear
        and child.weight.dtype == torch.float32
        and child.weight.device.type == "cpu"
    ]
    for parent, name, child in swaps:
        setattr(parent, name, OneDNNLinear(child))
    return len(swaps)


class LinearChoice:
    """Both forms of a model's swapped Linears, to time one against the other in place.

    Holds, for every :class:`OneDNNLinear` of ``model``, a plain ``nn.Linear`` over the same
    weight and bias; :meth:`use` puts one form or the other in the model.
    """

    def __init__(self, model: Any) -> None:
        self.slots = []
        for parent in model.modules():
            for name, child in parent.named_children():
                if isinstance(child, OneDNNLinear):
                    plain = torch.nn.Linear(
                        child.in_features,
                        child.out_features,
                        bias=child.bias is not None,
                        device="meta",
                    )
                    plain.weight, plain.bias = child.weight, child.bias
                    self.slots.append((parent, name, child, plain))

    def use(self, onednn: bool) -> None:
        """Put the oneDNN layers (True) or torch's own (False) in the model."""
        for parent, name, fast, plain in self.slots:
            setattr(parent, name, fast if onednn else plain)

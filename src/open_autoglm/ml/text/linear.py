"""Float32 ``nn.Linear`` layers computed on prepacked weights, on CPU: oneDNN or MKL.

An encoder forward on CPU is almost all matrix products, and torch's ``Linear`` lets MKL
repack the weight on every call, which for the few rows of a short text is most of the
work; on CPUs where MKL skips its best kernels, oneDNN (shipped in the same torch wheel)
computes the same product faster. :func:`swap_linears` swaps a model's float32 ``Linear``
modules for a :class:`PackedLinear` form that keeps ``weight`` and ``bias`` (``state_dict``,
``dtype`` and tied weights behave as before) plus a copy of the weight packed once:

- :class:`OneDNNLinear`: oneDNN's blocked layout (``torch.ops.mkldnn._linear_pointwise``, the
  op TorchInductor's CPU backend emits for the same purpose);
- :class:`MklLinear`: MKL's packed layout (``torch.ops.mkl._mkl_linear``, Inductor's op for
  frozen float32 Linears).

The packed copy is not updated if the weights change: inference only. oneDNN compiles a
kernel per input shape, so inputs are padded to one of a few row counts (:func:`row_bucket`)
to keep a server meeting thousands of shapes from growing without bound.

oneDNN computes each row bit for bit the same whatever other rows share the call (torch's
path sends one row through gemv and several through gemm, which sum in another order); that
is what lets generation batch requests and still give each the output it gets alone, so
generation and classification keep oneDNN wherever it is usable. Embedding models loaded
with ``auto`` time every usable form at load (:class:`LinearChoice`, ``ml/text/tuning.py``)
and keep the fastest. The ops are internal to PyTorch, so a swap first checks that the op
exists and matches ``F.linear`` on a probe, and otherwise keeps the stock layers with a log
line saying why.
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
    "PACKED_FORMS",
    "LinearChoice",
    "MklLinear",
    "OneDNNLinear",
    "PackedLinear",
    "form_available",
    "linear_form",
    "row_bucket",
    "swap_linears",
]

log = logging.getLogger(__name__)


class PackedLinear(torch.nn.Linear):
    """An ``nn.Linear`` whose forward runs on a copy of its weight packed once for a library's
    matrix product; subclasses name the ``form`` and do the packing and the product.

    Inference only: the output carries no gradient, and the packed copy does not follow
    later changes to ``weight``.
    """

    form = ""

    def __init__(self, linear: torch.nn.Linear) -> None:
        torch.nn.Module.__init__(self)
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        with torch.no_grad():
            self.packed = self._pack(self.weight.detach())

    def _pack(self, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __deepcopy__(self, memo: dict[int, Any]) -> PackedLinear:
        # The packed copy is an opaque tensor that copy.deepcopy cannot copy: repack.
        plain = torch.nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        plain.weight = copy.deepcopy(self.weight, memo)
        plain.bias = copy.deepcopy(self.bias, memo)
        return type(self)(plain)

    @property
    def packed_bytes(self) -> int:
        """The packed copy's size (the same elements as ``weight``, another layout)."""
        return int(self.weight.numel() * self.weight.element_size())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.detach()
        rows = x.reshape(x.numel() // self.in_features, self.in_features)
        return self._product(rows, bias).reshape(*x.shape[:-1], self.out_features)

    def _product(self, rows: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``rows @ W.T + bias`` for a 2-D ``rows``."""
        raise NotImplementedError


class OneDNNLinear(PackedLinear):
    """``x @ W.T + b`` by oneDNN (``torch.ops.mkldnn._linear_pointwise``) on its blocked layout,
    rows padded to :func:`row_bucket`."""

    form = "onednn"

    def _pack(self, weight: torch.Tensor) -> torch.Tensor:
        # Packed for a typical batch x sequence row count; any row count works.
        packed: torch.Tensor = torch.ops.mkldnn._reorder_linear_weight(weight, 256)
        return packed

    def _product(self, rows: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        m = rows.shape[0]
        padded = row_bucket(m)
        if padded != m:  # a bounded set of shapes: see row_bucket
            rows = torch.nn.functional.pad(rows, (0, 0, 0, padded - m))
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
            rows, self.packed, bias, "none", [], ""
        )
        return out[:m]


class MklLinear(PackedLinear):
    """``x @ W.T + b`` by MKL's sgemm on a weight packed once (``cblas_sgemm_pack``), through
    ``torch.ops.mkl._mkl_linear``, the op TorchInductor emits for frozen float32 Linears.

    torch's own Linear calls sgemm with the plain weight, and sgemm repacks it on every call:
    for the few rows of a short text that is most of the work, and the gain fades as the
    rows grow to a few hundred. MKL's packed layout does not depend on the row
    count: one copy serves every call, no shapes are compiled and nothing is padded. The result
    equals torch's Linear bit for bit from 16 rows up and within rounding below, where the
    kernels differ (tests/ml/text/test_linear.py).
    The op is told the call's own row count, since it falls back to the plain weight
    whenever the count differs from the one it is given.
    """

    form = "mkl"

    def _pack(self, weight: torch.Tensor) -> torch.Tensor:
        packed: torch.Tensor = torch.ops.mkl._mkl_reorder_linear_weight(weight, 256)
        return packed

    def _product(self, rows: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        out: torch.Tensor = torch.ops.mkl._mkl_linear(
            rows, self.packed, self.weight.detach(), bias, rows.shape[0]
        )
        return out


PACKED_FORMS: dict[str, type[PackedLinear]] = {"onednn": OneDNNLinear, "mkl": MklLinear}
"""The packed forms a float32 Linear can take, by the name ``options.linear`` gives them."""


def row_bucket(m: int) -> int:
    """``m`` rounded up to one of a few row counts (at most 7 rows or 1/8 more).

    oneDNN compiles a kernel per input shape (~2-3 ms) and caches it with its scratch memory
    (~0.7 MB each, 1024 by default). An encoder's rows are texts x padded length, thousands of
    different counts: over 3,000 distinct shapes a process grew by 2 GB, and once past the
    cache it recompiled on every call. Rounded rows (steps of 8 up to 128, 16 up to 512, 32
    up to 2048, 128 up to 8192, then 512) keep it to ~140 shapes per weight up to 8192 rows.
    The price is the padding of each Linear's input to its bucket.
    """
    step = 8 if m <= 128 else 16 if m <= 512 else 32 if m <= 2048 else 128 if m <= 8192 else 512
    return -(-m // step) * step


@functools.cache
def form_available(form: str) -> tuple[bool, str]:
    """(usable, reason): ``form``'s op exists in this torch build and agrees with ``F.linear``."""
    if form == "onednn" and not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        return False, "this torch build has no oneDNN (mkldnn)"
    if form == "mkl" and not torch.backends.mkl.is_available():  # type: ignore[no-untyped-call]
        return False, "this torch build has no MKL"
    try:
        probe = torch.nn.Linear(48, 40)
        x = torch.randn(2, 7, 48)
        with torch.inference_mode():
            got = PACKED_FORMS[form](probe)(x)
            want = torch.nn.functional.linear(x, probe.weight, probe.bias)
    except (RuntimeError, AttributeError, TypeError) as exc:
        return False, f"{form} linear op unusable: {exc}"
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
        return False, f"{form} linear op disagrees with F.linear on a probe"
    return True, "ok"


def swap_linears(model: Any, mode: str = "auto") -> int:
    """Swap ``model``'s float32 CPU ``nn.Linear`` layers in place for a packed form; returns
    how many.

    ``mode``: ``"auto"`` swaps to oneDNN when it is usable (an embedding model's
    :func:`~open_autoglm.ml.text.tuning.tune_linear` then times every form), ``"onednn"`` or
    ``"mkl"`` require that form (ValidationError otherwise), ``"torch"`` leaves the model alone.
    """
    if mode not in LINEAR_MODES:
        raise ValidationError(f"options.linear must be one of {list(LINEAR_MODES)}, not {mode!r}")
    if mode == "torch":
        return 0
    form = "onednn" if mode == "auto" else mode
    usable, reason = form_available(form)
    if not usable:
        if mode != "auto":
            raise ValidationError(f"options.linear {mode!r} is not available: {reason}")
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
        setattr(parent, name, PACKED_FORMS[form](child))
    return len(swaps)


def linear_form(model: Any) -> str:
    """What computes ``model``'s float32 Linears: a packed form's name, or ``"torch"``."""
    for module in model.modules() if model is not None else ():
        if isinstance(module, PackedLinear):
            return module.form
    return "torch"


class LinearChoice:
    """Every usable form of a model's swapped Linears, to time them against each other in place.

    For every :class:`PackedLinear` of ``model`` it holds a plain ``nn.Linear`` over the same
    weight and bias and the other packed forms usable here (each its own packed copy, freed
    with the choice); :meth:`use` puts one form in the model.
    """

    def __init__(self, model: Any) -> None:
        self.forms: list[str] = []
        self.slots: list[tuple[Any, str, dict[str, torch.nn.Module]]] = []
        usable = [f for f in PACKED_FORMS if form_available(f)[0]]
        for parent in model.modules():
            for name, child in parent.named_children():
                if not isinstance(child, PackedLinear):
                    continue
                plain = torch.nn.Linear(
                    child.in_features,
                    child.out_features,
                    bias=child.bias is not None,
                    device="meta",
                )
                plain.weight, plain.bias = child.weight, child.bias
                forms: dict[str, torch.nn.Module] = {"torch": plain}
                for form in usable:
                    forms[form] = child if child.form == form else PACKED_FORMS[form](plain)
                forms.setdefault(child.form, child)
                self.slots.append((parent, name, forms))
        if self.slots:
            self.forms = list(self.slots[0][2])

    def use(self, form: str) -> None:
        """Put ``form`` (one of :attr:`forms`) in the model."""
        if form not in self.forms:
            raise ValueError(f"no {form!r} form here; have {self.forms}")
        for parent, name, forms in self.slots:
            setattr(parent, name, forms[form])

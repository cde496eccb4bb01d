"""Continuous batching on one llama.cpp context: a sequence id per request, stepped together.

:class:`LlamaDecodeBatch` has the steppable surface of the transformers
:class:`~open_autoglm.ml.text.decode_batch.DecodeBatch` (``validate``/``add``/``step``/
``cancel``/``pop_finished``), so :class:`~open_autoglm.ml.text.engine.GenerationEngine` drives
either. ``add`` only assigns a sequence slot; each ``step`` runs one ``llama_decode`` with
the next token of every decoding sequence, then one per newcomer's prompt chunk (up to
``n_batch`` prompt tokens a step: a long prompt is prefilled over several steps while the
others keep decoding). Each sequence samples from its own logits with its own sampler (``sampler.py``: grammar, penalties, top-k/top-p/temperature or greedy).

A finished or cancelled sequence leaves the batch at once and its slot is free for the next
step; its KV cache stays as a prompt cache (:class:`~open_autoglm.ml.text.llama_cpp.slots.SlotTable`).
"""

from __future__ import annotations

import codecs
import itertools
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from open_autoglm.errors import ValidationError
from open_autoglm.ml.text.decode_batch import GenerationRequest, GenerationResult
from open_autoglm.ml.text.llama_cpp.sampler import make_sampler
from open_autoglm.ml.text.llama_cpp.slots import SlotTable
from open_autoglm.ml.text.sampling import find_stop, safe_text_end

if TYPE_CHECKING:
    from open_autoglm.ml.text.llama_cpp.model import LlamaCppModel

__all__ = ["LlamaDecodeBatch"]


@dataclass
class _Row:
    """Decode state of one request while it holds a sequence slot."""

    row_id: int
    seq_id: int
    request: GenerationRequest
    prompt_ids: list[int]
    sampler: Any  # a TokenSampler
    pending: list[int]  # tokens to feed next (prompt rest, then the last sampled token)
    n_past: int  # position of pending[0]
    reused: int  # prompt tokens served from the prompt cache
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    generated: list[int] = field(default_factory=list)
    sampled: int = 0
    text: str = ""
    emitted: int = 0
    finish_reason: str | None = None


class LlamaDecodeBatch:
    """The running sequences of one context, stepped one ``llama_decode`` at a time."""

    def __init__(self, model: LlamaCppModel) -> None:
        import llama_cpp

        self.model = model
        self.max_batch_size = model.max_batch_size
        self.slots = SlotTable(model.options.parallel)
        self._rows: list[_Row] = []
        self._finished: list[tuple[int, GenerationResult]] = []
        self._ids = itertools.count()
        self._n_batch = model.options.n_batch
        self._batch = llama_cpp.llama_batch_init(self._n_batch, 0, 1)
        # Forget every sequence; the cells keep their (finite) values, masked out until
        # rewritten: zeroing them again costs 0.1 s per 400 MB of cache on a first request.
        llama_cpp.llama_memory_clear(model.memory, False)
        self.prompt_tokens_reused = 0  # prompt tokens the prompt cache spared, for stats
        # Requests validated (encoded, sampler built) and about to be added, by id().
        self._checked: dict[int, tuple[GenerationRequest, list[int], Any]] = {}

    def __del__(self) -> None:
        import llama_cpp

        batch, self._batch = getattr(self, "_batch", None), None
        if batch is not None:
            llama_cpp.llama_batch_free(batch)

    # -- the DecodeBatch surface -------------------------------------------------------------

    @property
    def active(self) -> int:
        return len(self._rows)

    @property
    def free_slots(self) -> int:
        return min(self.slots.free, self.max_batch_size - len(self._rows))

    def validate(self, request: GenerationRequest) -> list[int]:
        """Encode ``request`` and build its sampler; raise ValidationError when it cannot fit
        a sequence's context or its grammar does not compile (so it fails alone)."""
        prompt_ids = self.model.encode(request)
        needed = len(prompt_ids) + request.params.max_tokens
        if needed > self.model.n_ctx:
            raise ValidationError(
                f"prompt ({len(prompt_ids)} tokens) + max_tokens ({request.params.max_tokens}) "
                f"exceeds the model context ({self.model.n_ctx})",
                details=[{"loc": ["params", "max_tokens"], "msg": "exceeds the context"}],
            )
        try:
            sampler = make_sampler(self.model, request.params, request.grammar)
        except ValueError as exc:
            raise ValidationError(
                f"the grammar does not parse: {exc}",
                details=[{"loc": ["params", "response_format"], "msg": "bad grammar"}],
            ) from None
        self._checked[id(request)] = (request, prompt_ids, sampler)
        return prompt_ids

    def add(self, requests: list[GenerationRequest]) -> list[int]:
        """Give each request a sequence slot; their prompts are fed by the next steps."""
        import llama_cpp

        if len(requests) > self.free_slots:
            raise ValidationError(
                f"batch has {self.free_slots} free slots, cannot add {len(requests)} requests"
            )
        ids = []
        for request in requests:
            checked = self._checked.pop(id(request), None)
            if checked is None or checked[0] is not request:
                self.validate(request)
                checked = self._checked.pop(id(request))
            _, prompt, sampler = checked
            plan = self.slots.acquire(prompt)
            keep = plan.keep
            # Drop what the slot holds past the shared prefix (all of it for a new prompt).
            if not llama_cpp.llama_memory_seq_rm(self.model.memory, plan.seq_id, keep, -1):
                llama_cpp.llama_memory_seq_rm(self.model.memory, plan.seq_id, -1, -1)
                self.slots.truncate(plan.seq_id, 0)
                keep = 0
            row = _Row(
                row_id=next(self._ids),
                seq_id=plan.seq_id,
                request=request,
                prompt_ids=prompt,
                sampler=sampler,
                pending=prompt[keep:],
                n_past=keep,
                reused=keep,
            )
            self.prompt_tokens_reused += keep
            self._rows.append(row)
            ids.append(row.row_id)
        return ids

    def step(self) -> None:
        """One step: a token for each decoding row, then prompt chunks for newcomers.

        The decoding rows share one ``llama_decode``; each newcomer's prompt chunk gets one of
        its own. Mixed in one call, llama.cpp splits a batch into equal per-sequence slices,
        so a newcomer's first prompt token would be computed alone in its slice and the
        rest later: attention over one query takes another kernel than over several, and
        the logits (hence greedy outputs) then differ from a lone llama.cpp's. Apart, every
        token is computed as a lone sequence computes it: bit for bit the same output.
        Decoding costs a token's compute per sequence either way (the weights' kernels are
        per row), so separate calls cost only their small fixed overhead.
        """
        if not self._rows:
            return
        decoding = [r for r in self._rows if len(r.pending) == 1]
        prefilling = [r for r in self._rows if len(r.pending) > 1]
        for i in range(0, len(decoding), self._n_batch):
            self._decode(sorted(decoding[i : i + self._n_batch], key=lambda r: r.seq_id))
        # Prompt chunks up to n_batch tokens per step in all (at least one), so a burst of
        # newcomers never stalls the decoding rows for more than about one chunk's compute.
        room = self._n_batch
        for row in prefilling:
            if room <= 0:
                break
            room -= min(self._n_batch, len(row.pending))
            self._decode([row])
        self._drop_finished()

    def _decode(self, rows: list[_Row]) -> None:
        """Feed ``rows``' pending tokens (a prompt chunk of at most n_batch tokens for a
        single row) in one ``llama_decode``; sample each row whose pending tokens all went in.
        """
        import llama_cpp

        batch = self._batch
        n = 0
        outputs: list[tuple[_Row, int]] = []  # rows sampling after this call, logits index
        fed: list[tuple[_Row, int]] = []  # rows and how many of their pending tokens go in
        for row in rows:
            take = min(self._n_batch - n, len(row.pending))
            for i in range(take):
                batch.token[n] = row.pending[i]
                batch.pos[n] = row.n_past + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = row.seq_id
                batch.logits[n] = False
                n += 1
            if take == len(row.pending):
                batch.logits[n - 1] = True
                outputs.append((row, n - 1))
            fed.append((row, take))
        batch.n_tokens = n
        rc = llama_cpp.llama_decode(self.model.ctx, batch)
        if rc == 1:
            # No room for the batch: free the cells idle slots keep as prompt caches, retry.
            for seq_id in self.slots.idle():
                llama_cpp.llama_memory_seq_rm(self.model.memory, seq_id, -1, -1)
                self.slots.truncate(seq_id, 0)
            rc = llama_cpp.llama_decode(self.model.ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with status {rc}")
        for row, take in fed:
            self.slots.fed(row.seq_id, row.pending[:take])
            row.n_past += take
            del row.pending[:take]
        for row, index in outputs:
            token = row.sampler.sample(self.model.ctx, index)
            self._accept(row, token)

    def cancel(self, row_ids: Collection[int]) -> list[int]:
        """Stop these rows now; their results (text so far) get finish_reason "cancelled"."""
        cancelled = []
        for row in self._rows:
            if row.row_id in row_ids and row.finish_reason is None:
                row.finish_reason = "cancelled"
                self._finished.append((row.row_id, self._result(row)))
                cancelled.append(row.row_id)
        self._drop_finished()
        return cancelled

    def pop_finished(self) -> list[tuple[int, GenerationResult]]:
        done, self._finished = self._finished, []
        return done

    # -- internals ---------------------------------------------------------------------------

    def _accept(self, row: _Row, token: int) -> None:
        params = row.request.params
        row.sampled += 1
        if self.model.is_end(token):
            row.finish_reason = "stop"
        else:
            row.generated.append(token)
            row.text += row.decoder.decode(self.model.piece(token))
            row.pending = [token]
            if row.sampled >= params.max_tokens:
                row.finish_reason = "length"
        if row.finish_reason:
            row.text += row.decoder.decode(b"", final=True)
        cut = find_stop(row.text, params.stop)
        if cut >= 0:
            row.text, row.finish_reason = row.text[:cut], "stop"
        if row.request.on_delta is not None:
            end = len(row.text) if row.finish_reason else safe_text_end(row.text, params.stop)
            if end > row.emitted:
                row.request.on_delta(row.text[row.emitted : end])
                row.emitted = end
        if row.finish_reason:
            self._finished.append((row.row_id, self._result(row)))

    @staticmethod
    def _result(row: _Row) -> GenerationResult:
        return GenerationResult(
            text=row.text,
            finish_reason=row.finish_reason or "stop",
            prompt_tokens=len(row.prompt_ids),
            # The end-of-generation token is not part of the completion (as llama.cpp counts).
            completion_tokens=len(row.generated),
            token_ids=tuple(row.generated),
        )

    def _drop_finished(self) -> None:
        keep = []
        for row in self._rows:
            if row.finish_reason is None:
                keep.append(row)
            else:
                self.slots.release(row.seq_id)
                row.sampler.close()
        self._rows = keep

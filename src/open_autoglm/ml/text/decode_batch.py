"""A continuous decode batch for causal LMs: requests join between steps and leave when done.

:class:`DecodeBatch` is a steppable core with no threads or clocks: ``add`` prefills the
newcomers (left padded) and merges their KV cache into the running batch, ``step`` decodes one
token for every active row, ``pop_finished`` hands back finished results. The thread that
drives it for concurrent callers lives in ``engine.py``.

Layout of the running batch (``L`` = cache length, shared by all rows):

- ``cache``: a transformers ``DynamicCache``; per layer keys/values (batch, heads, L, head_dim)
- ``mask``: (batch, L) 1 for real tokens, 0 for left padding
- ``positions``: (batch,) position id of the token each row feeds next
- ``next_tokens``: (batch,) the token each row feeds next

Padding and positions are why batched greedy equals single greedy: padded cache slots are
masked out and each row's position ids count only its real tokens, so a row sees exactly what
it would see alone (up to float summation order).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from open_autoglm.errors import ValidationError
from open_autoglm.ml.text.sampling import (
    SamplingParams,
    find_stop,
    make_generator,
    safe_text_end,
    sample_next_token,
)

__all__ = ["DecodeBatch", "GenerationRequest", "GenerationResult", "refuse_llama_only"]

DeltaCallback = Callable[[str], None]


@dataclass(frozen=True)
class GenerationRequest:
    """One generation request.

    Args:
        prompt: plain text prompt (ignored when ``messages`` is given).
        messages: chat messages ``[{"role": ..., "content": ...}]``.
        params: sampling parameters.
        chat: apply the tokenizer's chat template to ``prompt``; None = when it has one.
        on_delta: called with each new piece of text as it is decoded (for streaming).
        grammar: a GBNF grammar the output must follow (constrained decoding; llama.cpp
            backend only), e.g. from :mod:`open_autoglm.ml.text.structured`.
        tools: OpenAI tool definitions handed to the chat template (the model's template,
            or a system message describing them when the template takes none).
    """

    prompt: str = ""
    messages: Sequence[Mapping[str, Any]] | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    chat: bool | None = None
    on_delta: DeltaCallback | None = None
    grammar: str | None = None
    tools: Sequence[Mapping[str, Any]] | None = None


@dataclass(frozen=True)
class GenerationResult:
    text: str
    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int
    token_ids: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
            },
        }


@dataclass
class _Row:
    """Mutable decode state of one request while it is in the batch."""

    seq_id: int
    request: GenerationRequest
    prompt_ids: list[int]
    generator: Any  # torch.Generator
    generated: list[int] = field(default_factory=list)
    sampled: int = 0
    text: str = ""
    emitted: int = 0
    prefix_offset: int = 0  # incremental detokenisation window, see _extend_text
    read_offset: int = 0
    finish_reason: str | None = None


def refuse_llama_only(request: GenerationRequest) -> None:
    """Refuse what only the llama.cpp backend does (grammars, penalties) with a 400."""
    p = request.params
    wanted = [
        name
        for name, used in (
            ("response_format", request.grammar is not None),
            ("frequency_penalty", bool(p.frequency_penalty)),
            ("presence_penalty", bool(p.presence_penalty)),
            ("tools", bool(request.tools)),
        )
        if used
    ]
    if wanted:
        raise ValidationError(
            f"{', '.join(wanted)} needs a GGUF model (llama.cpp backend); this model runs on "
            "transformers",
            details=[{"loc": ["params", name], "msg": "llama.cpp backend only"} for name in wanted],
        )


def _left_pad(t: Any, n: int) -> Any:
    """Pad the sequence dim (-2) of (batch, heads, L, head_dim) with ``n`` zero slots on the left."""
    import torch.nn.functional as F

    return F.pad(t, (0, 0, n, 0)) if n else t


class DecodeBatch:
    """Running batch of sequences decoded together with one shared KV cache."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch_size: int = 32) -> None:
        if max_batch_size < 1:
            raise ValidationError("max_batch_size must be >= 1")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self._rows: list[_Row] = []
        self._finished: list[tuple[int, GenerationResult]] = []
        self._ids = itertools.count()
        self._cache: Any = None
        self._mask: Any = None
        self._positions: Any = None
        self._next_tokens: Any = None
        self._pad_id = self._pick_pad_id()
        self._eos_ids = self._pick_eos_ids()
        self._max_positions = self._pick_max_positions()

    # -- setup -------------------------------------------------------------------------------

    def _pick_pad_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id, 0):
            if candidate is not None:
                return int(candidate)
        return 0

    def _pick_eos_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        gen_cfg = getattr(self.model, "generation_config", None)
        eos = getattr(gen_cfg, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, list | tuple):
            ids.update(int(e) for e in eos)
        return frozenset(ids)

    def _pick_max_positions(self) -> int | None:
        cfg = self.model.config
        for name in ("max_position_embeddings", "n_positions"):
            value = getattr(cfg, name, None)
            if isinstance(value, int):
                return value
        return None

    # -- public API --------------------------------------------------------------------------

    @property
    def active(self) -> int:
        return len(self._rows)

    @property
    def free_slots(self) -> int:
        return self.max_batch_size - len(self._rows)

    @property
    def cache_length(self) -> int:
        return 0 if self._mask is None else int(self._mask.shape[1])

    def encode(self, request: GenerationRequest) -> list[int]:
        """Token ids of a request's prompt, with the chat template applied when it should be."""
        tok = self.tokenizer
        has_template = bool(getattr(tok, "chat_template", None))
        if request.messages is not None:
            messages = [dict(m) for m in request.messages]
        elif request.chat or (request.chat is None and has_template):
            messages = [{"role": "user", "content": request.prompt}]
        else:
            messages = None
        if messages is not None:
            if not has_template:
                # No template: a plain transcript is the least surprising fallback.
                text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
                ids = list(tok(text)["input_ids"])
            else:
                encoded = tok.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=True, return_dict=True
                )
                ids = list(encoded["input_ids"])
        else:
            ids = list(tok(request.prompt)["input_ids"])
        if not ids:
            if tok.bos_token_id is None:
                raise ValidationError("prompt is empty and the tokenizer has no BOS token")
            ids = [int(tok.bos_token_id)]
        return ids

    def validate(self, request: GenerationRequest) -> list[int]:
        """Encode ``request``; raise ValidationError when it cannot fit the model context."""
        refuse_llama_only(request)
        prompt_ids = self.encode(request)
        needed = len(prompt_ids) + request.params.max_tokens
        if self._max_positions is not None and needed > self._max_positions:
            raise ValidationError(
                f"prompt ({len(prompt_ids)} tokens) + max_tokens ({request.params.max_tokens}) "
                f"exceeds the model context ({self._max_positions})"
            )
        return prompt_ids

    def add(self, requests: Sequence[GenerationRequest]) -> list[int]:
        """Prefill ``requests``, sample their first token and join them to the batch.

        Returns one sequence id per request; results come back from :meth:`pop_finished`.
        """
        if not requests:
            return []
        if len(requests) > self.free_slots:
            raise ValidationError(
                f"batch has {self.free_slots} free slots, cannot add {len(requests)} requests"
            )
        rows = [
            _Row(
                seq_id=next(self._ids),
                request=request,
                prompt_ids=self.validate(request),
                generator=make_generator(request.params.seed),
            )
            for request in requests
        ]
        logits, cache, mask = self._prefill([r.prompt_ids for r in rows])
        self._join(rows, cache, mask)
        self._accept_all(rows, logits)
        return [r.seq_id for r in rows]

    def step(self) -> None:
        """Decode one token for every active row."""
        import torch

        if not self._rows:
            return
        mask = torch.cat([self._mask, self._mask.new_ones((len(self._rows), 1))], dim=1)
        with torch.inference_mode():
            out = self.model(
                input_ids=self._next_tokens[:, None],  # (batch, 1)
                attention_mask=mask,  # (batch, L + 1)
                position_ids=self._positions[:, None],  # (batch, 1)
                cache=self._cache,
                use_cache=True,
            )
        self._cache = out.cache
        self._mask = mask
        self._positions = self._positions + 1
        self._accept_all(list(self._rows), out.logits[:, -1, :])  # (batch, vocab)

    def cancel(self, seq_ids: Collection[int]) -> list[int]:
        """Stop these sequences now; their results (text so far) get finish_reason "cancelled"."""
        cancelled = []
        for row in self._rows:
            if row.seq_id in seq_ids and row.finish_reason is None:
                row.finish_reason = "cancelled"
                self._finished.append((row.seq_id, self._result(row)))
                cancelled.append(row.seq_id)
        self._drop_finished()
        return cancelled

    def pop_finished(self) -> list[tuple[int, GenerationResult]]:
        done, self._finished = self._finished, []
        return done

    # -- internals ---------------------------------------------------------------------------

    def _prefill(self, prompts: list[list[int]]) -> tuple[Any, Any, Any]:
        """Run the prompts left padded; return last-position logits (n, vocab), cache, mask."""
        import torch
        from transformers import DynamicCache

        n, length = len(prompts), max(len(p) for p in prompts)
        input_ids = torch.full((n, length), self._pad_id, dtype=torch.long)
        mask = torch.zeros((n, length), dtype=torch.long)
        for i, ids in enumerate(prompts):
            input_ids[i, length - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[i, length - len(ids) :] = 1
        # Real tokens count from 0 whatever the padding; pad slots get 0 and are masked anyway.
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=position_ids,
                cache=DynamicCache(),
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[:, -1, :], out.cache, mask

    def _join(self, rows: list[_Row], cache: Any, mask: Any) -> None:
        """Append prefilled rows to the running batch, left padding whichever cache is shorter."""
        import torch

        positions = mask.sum(dim=1)
        filler = torch.full((len(rows),), self._pad_id, dtype=torch.long)
        if self._cache is None:
            self._cache, self._mask = cache, mask
            self._positions, self._next_tokens = positions, filler
        else:
            old_len, new_len = self._mask.shape[1], mask.shape[1]
            length = max(old_len, new_len)
            for old, new in zip(self._cache.layers, cache.layers, strict=True):
                old.keys = torch.cat(
                    [_left_pad(old.keys, length - old_len), _left_pad(new.keys, length - new_len)]
                )
                old.values = torch.cat(
                    [
                        _left_pad(old.values, length - old_len),
                        _left_pad(new.values, length - new_len),
                    ]
                )
            pad = torch.nn.functional.pad
            self._mask = torch.cat(
                [pad(self._mask, (length - old_len, 0)), pad(mask, (length - new_len, 0))]
            )
            self._positions = torch.cat([self._positions, positions])
            self._next_tokens = torch.cat([self._next_tokens, filler])
        self._rows.extend(rows)

    def _accept_all(self, rows: list[_Row], logits: Any) -> None:
        """Sample one token per row from ``logits`` (rows in batch order), then drop finished."""
        offset = len(self._rows) - len(rows)
        for i, row in enumerate(rows):
            token = sample_next_token(logits[i], row.request.params, row.generator)
            self._accept(row, token)
            self._next_tokens[offset + i] = token
        self._drop_finished()

    def _accept(self, row: _Row, token: int) -> None:
        params = row.request.params
        row.sampled += 1
        if token in self._eos_ids:
            row.finish_reason = "stop"
        else:
            row.generated.append(token)
            self._extend_text(row)
            if row.sampled >= params.max_tokens:
                row.finish_reason = "length"
        if row.finish_reason:
            # Settle bytes still pending (a character split over tokens) as a full decode would.
            row.text = self.tokenizer.decode(row.generated, skip_special_tokens=True)
        cut = find_stop(row.text, params.stop)
        if cut >= 0:
            row.text, row.finish_reason = row.text[:cut], "stop"
        if row.request.on_delta is not None:
            end = len(row.text) if row.finish_reason else safe_text_end(row.text, params.stop)
            if end > row.emitted:
                row.request.on_delta(row.text[row.emitted : end])
                row.emitted = end
        if row.finish_reason:
            self._finished.append((row.seq_id, self._result(row)))

    def _extend_text(self, row: _Row) -> None:
        """Append the newly completed text of ``row`` without re-decoding all its tokens.

        Decodes only a window from ``prefix_offset``: the text of the tokens after
        ``read_offset`` is the difference between the window with and without them. Waits
        while the new bytes end in an incomplete character (U+FFFD). Same scheme as TGI/vLLM.
        """
        ids = row.generated
        prefix = self.tokenizer.decode(
            ids[row.prefix_offset : row.read_offset], skip_special_tokens=True
        )
        window = self.tokenizer.decode(ids[row.prefix_offset :], skip_special_tokens=True)
        if len(window) > len(prefix) and not window.endswith("\ufffd"):
            row.text += window[len(prefix) :]
            row.prefix_offset, row.read_offset = row.read_offset, len(ids)

    @staticmethod
    def _result(row: _Row) -> GenerationResult:
        return GenerationResult(
            text=row.text,
            finish_reason=row.finish_reason or "stop",
            prompt_tokens=len(row.prompt_ids),
            completion_tokens=row.sampled,
            token_ids=tuple(row.generated),
        )

    def _drop_finished(self) -> None:
        import torch

        keep = [i for i, row in enumerate(self._rows) if row.finish_reason is None]
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._rows = []
            self._cache = self._mask = self._positions = self._next_tokens = None
            return
        index = torch.tensor(keep, dtype=torch.long)
        self._rows = [self._rows[i] for i in keep]
        self._cache.batch_select_indices(index)
        self._mask = self._mask[index]
        self._positions = self._positions[index]
        self._next_tokens = self._next_tokens[index]
        # Columns that are padding for every remaining row are dead weight: trim them.
        first_used = int(torch.nonzero(self._mask.any(dim=0))[0].item())
        if first_used:
            for layer in self._cache.layers:
                layer.keys = layer.keys[:, :, first_used:]
                layer.values = layer.values[:, :, first_used:]
            self._mask = self._mask[:, first_used:]

"""Per-sequence token choice on llama.cpp logits: a sampler chain, and fast paths for greedy
decoding (an argmax in place; under a grammar, the argmax checked first).

A grammar sampler checks every vocabulary entry against the grammar, which costs far more
than the forward pass of a small model. Under greedy decoding the grammar only matters when
the unconstrained argmax breaks it: :class:`GreedyGrammarSampler` checks that one token first
and filters the whole vocabulary only when it is refused (as llama.cpp's own common sampler
does). Each gives the token ``llama_sampler_sample`` with the same chain would.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Protocol

from open_autoglm.ml.text.sampling import SamplingParams

if TYPE_CHECKING:
    from open_autoglm.ml.text.llama_cpp.model import LlamaCppModel

__all__ = [
    "ChainSampler",
    "GreedyGrammarSampler",
    "GreedySampler",
    "TokenSampler",
    "make_sampler",
]

_PENALTY_WINDOW = 64  # tokens the frequency/presence penalties look back over


class TokenSampler(Protocol):
    def sample(self, ctx: Any, index: int) -> int:
        """Choose (and accept) the next token from the logits of batch position ``index``."""

    def close(self) -> None: ...


class ChainSampler:
    """A llama.cpp sampler chain: grammar, penalties, top-k/top-p/temperature or greedy."""

    def __init__(self, model: LlamaCppModel, params: SamplingParams, grammar: str | None):
        import llama_cpp
        from llama_cpp._internals import LlamaSampler

        chain: Any = LlamaSampler()  # type: ignore[no-untyped-call]
        if params.penalised:
            chain.add_penalties(
                model.n_vocab,
                _PENALTY_WINDOW,
                1.0,
                params.frequency_penalty,
                params.presence_penalty,
            )
        if grammar is not None:
            constraint = llama_cpp.llama_sampler_init_grammar(
                model.vocab, grammar.encode("utf-8"), b"root"
            )
            if not constraint:
                chain.close()
                raise ValueError("the grammar does not parse")
            llama_cpp.llama_sampler_chain_add(chain.sampler, constraint)  # the chain owns it
        if params.greedy:
            chain.add_greedy()
        else:
            if params.top_k:
                chain.add_top_k(params.top_k)
            if params.top_p < 1.0:
                chain.add_top_p(params.top_p, 1)
            chain.add_temp(params.temperature)
            seed = params.seed if params.seed is not None else random.SystemRandom().getrandbits(32)
            chain.add_dist(seed & 0xFFFFFFFF)
        self._chain = chain

    def sample(self, ctx: Any, index: int) -> int:
        import llama_cpp

        return int(llama_cpp.llama_sampler_sample(self._chain.sampler, ctx, index))

    def close(self) -> None:
        self._chain.close()


class GreedySampler:
    """Plain greedy decoding: the argmax of the logits, read in place.

    The same token as a llama.cpp greedy chain (the first of equal maxima), without copying
    the vocabulary into a candidate array for every sequence at every step (a third of the
    time, which adds up over a batch of sequences).
    """

    def __init__(self, model: LlamaCppModel) -> None:
        self._n_vocab = model.n_vocab

    def sample(self, ctx: Any, index: int) -> int:
        import llama_cpp
        import numpy as np

        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(ctx, index), shape=(self._n_vocab,)
        )  # (n_vocab,)
        return int(np.argmax(logits))

    def close(self) -> None:
        pass


class GreedyGrammarSampler:
    """Greedy decoding under a grammar, checking the argmax before filtering the vocabulary."""

    def __init__(self, model: LlamaCppModel, grammar: str) -> None:
        import ctypes

        import llama_cpp
        import numpy as np

        self._grammar = llama_cpp.llama_sampler_init_grammar(
            model.vocab, grammar.encode("utf-8"), b"root"
        )
        if not self._grammar:
            raise ValueError("the grammar does not parse")
        self._n_vocab = model.n_vocab
        self._one = (llama_cpp.llama_token_data * 1)()
        self._one_array = llama_cpp.llama_token_data_array(
            data=ctypes.cast(self._one, llama_cpp.llama_token_data_p), size=1, selected=-1
        )
        self._all = (llama_cpp.llama_token_data * self._n_vocab)()
        # (n_vocab,) view of the candidates' fields, to fill from the logits at once
        self._all_np = np.ctypeslib.as_array(self._all)
        self._all_array = llama_cpp.llama_token_data_array(
            data=ctypes.cast(self._all, llama_cpp.llama_token_data_p),
            size=self._n_vocab,
            selected=-1,
        )
        self._ids = np.arange(self._n_vocab, dtype=np.int32)

    def sample(self, ctx: Any, index: int) -> int:
        import ctypes

        import llama_cpp
        import numpy as np

        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(ctx, index), shape=(self._n_vocab,)
        )  # (n_vocab,)
        token = int(np.argmax(logits))
        one: Any = self._one[0]
        one.id, one.logit, one.p = token, float(logits[token]), 0.0
        self._one_array.size, self._one_array.selected = 1, -1
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(self._one_array))
        if one.logit == float("-inf"):  # refused: filter everything, take the best
            self._all_np["id"] = self._ids
            self._all_np["logit"] = logits
            self._all_np["p"] = 0.0
            self._all_array.size, self._all_array.selected = self._n_vocab, -1
            self._all_array.sorted = False
            llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(self._all_array))
            token = int(self._all_np["id"][int(np.argmax(self._all_np["logit"]))])
        llama_cpp.llama_sampler_accept(self._grammar, token)
        return token

    def close(self) -> None:
        import llama_cpp

        if self._grammar:
            llama_cpp.llama_sampler_free(self._grammar)
            self._grammar = None


def make_sampler(model: LlamaCppModel, params: SamplingParams, grammar: str | None) -> TokenSampler:
    """The sampler of one sequence (raises ValueError when ``grammar`` does not parse)."""
    if params.greedy and not params.penalised:
        return GreedySampler(model) if grammar is None else GreedyGrammarSampler(model, grammar)
    return ChainSampler(model, params, grammar)

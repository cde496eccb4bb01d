"""Which tokens of each text drive the similarity of a pair, for embedding models.

The explained output is the cosine similarity of the two texts' pooled embeddings. Each side
is attributed with the other side's vector held fixed, by layer integrated gradients on the
word embeddings (as for classifiers, :mod:`open_autoglm.ml.explain.tokens`), so each side's
scores add up to how much its words, against a ``[PAD]`` baseline, move the similarity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from open_autoglm.errors import ValidationError
from open_autoglm.ml.explain.base import Family, TokenAttribution, register_explainer, top_items
from open_autoglm.ml.explain.tokens import _baseline_ids

__all__ = ["PairSimilarityExplainer"]


class PairSimilarityExplainer:
    """Explains ``cos(embed(a), embed(b))`` token by token on both sides."""

    def __init__(self, loaded: Any, *, max_tokens: int = 256) -> None:
        from open_autoglm.ml.text.embedding import read_pooling_config

        self.model = loaded.model.eval()
        self.tokenizer = loaded.tokenizer
        self.max_tokens = max_tokens
        self.pooling, _ = read_pooling_config(loaded.path)

    def _encode(self, text: str) -> tuple[Any, Any]:
        enc = self.tokenizer(text, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]  # (1, seq)

    def _vector(self, ids: Any, mask: Any) -> Any:
        import torch

        from open_autoglm.ml.text.embedding import pool

        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (b, seq, d)
        return torch.nn.functional.normalize(pool(hidden, mask, self.pooling), dim=-1)  # (b, d)

    def _side(
        self, text: str, other: Any, steps: int, internal_batch_size: int
    ) -> TokenAttribution:
        import torch
        from captum.attr import LayerIntegratedGradients

        ids, mask = self._encode(text)

        def similarity(input_ids: Any, attention_mask: Any) -> Any:
            return (self._vector(input_ids, attention_mask) * other).sum(-1)  # (b,)

        baseline = _baseline_ids(self.tokenizer, ids)
        lig = LayerIntegratedGradients(similarity, self.model.get_input_embeddings())
        attributions, delta = lig.attribute(
            inputs=ids,
            baselines=baseline,
            additional_forward_args=(mask,),
            n_steps=steps,
            internal_batch_size=internal_batch_size,
            return_convergence_delta=True,
        )  # (1, seq, hidden), (1,)
        with torch.no_grad():
            out, base = float(similarity(ids, mask)[0]), float(similarity(baseline, mask)[0])
        return TokenAttribution(
            text=text,
            tokens=self.tokenizer.convert_ids_to_tokens(ids[0].tolist()),
            scores=[float(s) for s in attributions.sum(-1)[0]],
            target="similarity",
            output=out,
            baseline_output=base,
            delta=float(delta[0]),
            method="integrated-gradients",
        )

    def explain(
        self, a: str, b: str, *, steps: int = 32, internal_batch_size: int = 16
    ) -> tuple[float, TokenAttribution, TokenAttribution]:
        """The pair's similarity and each side's token attributions."""
        import torch

        with torch.no_grad():
            va = self._vector(*self._encode(a))  # (1, d)
            vb = self._vector(*self._encode(b))
        sim = float((va * vb).sum())
        return (
            sim,
            self._side(a, vb.detach(), steps, internal_batch_size),
            self._side(b, va.detach(), steps, internal_batch_size),
        )


def _pairs(texts: Sequence[Any], pair: str | None) -> list[tuple[str, str]]:
    if pair is not None:
        return [(str(t), pair) for t in texts]
    if len(texts) == 2 and all(isinstance(t, str) for t in texts):
        return [(texts[0], texts[1])]
    if all(isinstance(t, (list, tuple)) and len(t) == 2 for t in texts):
        return [(str(t[0]), str(t[1])) for t in texts]
    raise ValidationError(
        "an embedding model is explained on pairs of texts",
        details=[
            {
                "loc": ["input"],
                "msg": "give two texts, a list of [a, b] pairs, or texts plus params.pair",
            }
        ],
    )


@register_explainer(Family.EMBEDDING)
def explain_pairs(
    loaded: Any,
    texts: Sequence[Any],
    *,
    pair: str | None = None,
    steps: int = 32,
    internal_batch_size: int = 16,
    top_k: int = 10,
    on_text: Any = None,
    **_: Any,
) -> dict[str, Any]:
    """Explain the similarity of each pair."""
    explainer = PairSimilarityExplainer(loaded)
    pairs = _pairs(texts, pair)
    explanations, found = [], []
    for i, (a, b) in enumerate(pairs):
        sim, left, right = explainer.explain(
            a, b, steps=steps, internal_batch_size=internal_batch_size
        )
        found += [left, right]
        explanations.append(
            {
                "similarity": round(sim, 6),
                "a": {**left.to_dict(), "top_tokens": top_items(left.tokens, left.scores, top_k)},
                "b": {
                    **right.to_dict(),
                    "top_tokens": top_items(right.tokens, right.scores, top_k),
                },
            }
        )
        if on_text is not None:
            on_text(i + 1, len(pairs))
    return {"family": Family.EMBEDDING.value, "explanations": explanations, "_attributions": found}

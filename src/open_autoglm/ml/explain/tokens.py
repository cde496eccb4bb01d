"""Token attributions for text classifiers: layer integrated gradients on the embeddings.

Integrated gradients (Sundararajan et al. 2017) is the one gradient method with a built-in
check: the attributions must add up to f(input) - f(baseline), and the gap it reports
(``convergence_delta``) says whether enough steps were taken. Interpolating the word
embeddings (Captum's ``LayerIntegratedGradients``) rather than token ids keeps the path
differentiable. The baseline keeps ``[CLS]``/``[SEP]`` and puts ``[PAD]`` in every other
position, so only what the words contribute is attributed. Steps are run in internal
batches, so memory stays bounded however many steps are asked for.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from open_autoglm.errors import ValidationError
from open_autoglm.ml.explain.base import Family, TokenAttribution, register_explainer, top_items

__all__ = ["TextClassifierExplainer", "global_token_importance"]


def _baseline_ids(tokenizer: Any, ids: Any) -> Any:
    """``ids`` with every non-special token replaced by the pad (else unknown) token."""
    import torch

    fill = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.unk_token_id
    special = torch.tensor(
        tokenizer.get_special_tokens_mask(ids[0].tolist(), already_has_special_tokens=True),
        dtype=torch.bool,
    )  # (seq,)
    baseline = ids.clone()
    baseline[0, ~special] = int(fill)
    return baseline


class TextClassifierExplainer:
    """Explains a sequence classifier's prediction for a text, token by token.

    Args:
        loaded: the model with torch's own Linears (packed inference Linears have no
            gradient), in eval mode.
        output: ``"probability"`` (softmax of the target class) or ``"logit"``.
        max_tokens: texts are truncated to this many tokens.
    """

    def __init__(self, loaded: Any, *, output: str = "probability", max_tokens: int = 256):
        if output not in ("probability", "logit"):
            raise ValidationError(f"output must be 'probability' or 'logit', not {output!r}")
        self.model = loaded.model.eval()
        self.tokenizer = loaded.tokenizer
        self.output = output
        self.max_tokens = max_tokens
        id2label = getattr(self.model.config, "id2label", None) or {}
        n = int(self.model.config.num_labels)
        self.labels = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(n)]

    def _forward(self, input_ids: Any, attention_mask: Any) -> Any:
        import torch

        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return torch.softmax(logits, dim=-1) if self.output == "probability" else logits

    def encode(self, text: str) -> tuple[Any, Any]:
        enc = self.tokenizer(text, truncation=True, max_length=self.max_tokens, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]  # (1, seq) each

    def target_index(self, target: str | int | None, probs: Any) -> int:
        if target is None:
            return int(probs.argmax())
        if isinstance(target, int) and not isinstance(target, bool):
            if 0 <= target < len(self.labels):
                return target
        elif str(target) in self.labels:
            return self.labels.index(str(target))
        raise ValidationError(
            f"unknown target {target!r}; the model's labels are {self.labels}",
            details=[{"loc": ["params", "target"], "msg": f"one of {self.labels}"}],
        )

    def explain(
        self,
        text: str,
        *,
        target: str | int | None = None,
        steps: int = 32,
        internal_batch_size: int = 16,
    ) -> TokenAttribution:
        """Attribute the target class's output (default: the predicted class) to each token."""
        import torch
        from captum.attr import LayerIntegratedGradients

        ids, mask = self.encode(text)
        with torch.no_grad():
            probs = torch.softmax(self.model(input_ids=ids, attention_mask=mask).logits, -1)[0]
        index = self.target_index(target, probs)
        baseline = _baseline_ids(self.tokenizer, ids)
        lig = LayerIntegratedGradients(self._forward, self.model.get_input_embeddings())
        attributions, delta = lig.attribute(
            inputs=ids,
            baselines=baseline,
            target=index,
            additional_forward_args=(mask,),
            n_steps=steps,
            internal_batch_size=internal_batch_size,
            return_convergence_delta=True,
        )  # (1, seq, hidden), (1,)
        scores = attributions.sum(dim=-1)[0]  # (seq,)
        with torch.no_grad():
            out = float(self._forward(ids, mask)[0, index])
            base_out = float(self._forward(baseline, mask)[0, index])
        return TokenAttribution(
            text=text,
            tokens=self.tokenizer.convert_ids_to_tokens(ids[0].tolist()),
            scores=[float(s) for s in scores],
            target=self.labels[index],
            output=out,
            baseline_output=base_out,
            delta=float(delta[0]),
            method="integrated-gradients",
            extra={
                "probabilities": {
                    label: round(float(p), 6) for label, p in zip(self.labels, probs, strict=True)
                },
                "output_kind": self.output,
                "steps": steps,
            },
        )

    def explain_shap(
        self, text: str, *, target: str | int | None = None, max_evals: int = 200, seed: int = 0
    ) -> TokenAttribution:
        """SHAP's partition explainer over the tokenizer's tokens; its additivity gap is the
        ``convergence_delta`` (values + base value - f(text)), reported, never hidden."""
        import numpy as np
        import shap
        import torch

        def predict(texts: Any) -> Any:
            with torch.no_grad():
                enc = self.tokenizer(
                    [str(t) for t in texts],
                    padding=True,
                    truncation=True,
                    max_length=self.max_tokens,
                    return_tensors="pt",
                )
                out = self._forward(enc["input_ids"], enc["attention_mask"])
            return out.numpy()

        full = predict([text])[0]
        probs = (
            torch.tensor(full)
            if self.output == "probability"
            else torch.softmax(torch.tensor(full), -1)
        )
        index = self.target_index(target, probs)
        masker = shap.maskers.Text(self.tokenizer)
        explainer = shap.Explainer(predict, masker, algorithm="partition", seed=seed)
        values = explainer([text], max_evals=max_evals, silent=True)
        scores = np.asarray(values.values[0])[:, index]
        base = float(np.asarray(values.base_values[0])[index])
        return TokenAttribution(
            text=text,
            tokens=[str(t) for t in values.data[0]],
            scores=[float(s) for s in scores],
            target=self.labels[index],
            output=float(full[index]),
            baseline_output=base,
            delta=float(scores.sum() + base - full[index]),
            method="shap-partition",
            extra={"output_kind": self.output, "max_evals": max_evals},
        )


def global_token_importance(
    explanations: Sequence[TokenAttribution], k: int = 20
) -> dict[str, Any]:
    """Mean attribution per token over a sample (special tokens left out), top ``k``."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for e in explanations:
        for token, score in zip(e.tokens, e.scores, strict=True):
            if token.startswith("[") and token.endswith("]"):
                continue
            sums[token] += score
            counts[token] += 1
    names = sorted(sums)
    means = [sums[t] / counts[t] for t in names]
    items = top_items(names, means, k)
    for item in items:
        item["count"] = counts[item["name"]]
    return {"texts": len(explanations), "top_tokens": items}


@register_explainer(Family.TEXT_CLASSIFICATION)
def explain_texts(
    loaded: Any,
    texts: Sequence[str],
    *,
    method: str = "integrated-gradients",
    target: str | int | None = None,
    steps: int = 32,
    internal_batch_size: int = 16,
    output: str = "probability",
    max_evals: int = 200,
    seed: int = 0,
    top_k: int = 10,
    on_text: Any = None,
    **_: Any,
) -> dict[str, Any]:
    """Explain each text; with several, also their global token importance."""
    explainer = TextClassifierExplainer(loaded, output=output)
    found: list[TokenAttribution] = []
    for i, text in enumerate(texts):
        if method == "shap":
            found.append(
                explainer.explain_shap(text, target=target, max_evals=max_evals, seed=seed)
            )
        else:
            found.append(
                explainer.explain(
                    text, target=target, steps=steps, internal_batch_size=internal_batch_size
                )
            )
        if on_text is not None:
            on_text(i + 1, len(texts))
    out: dict[str, Any] = {
        "family": Family.TEXT_CLASSIFICATION.value,
        "explanations": [
            {**e.to_dict(), "top_tokens": top_items(e.tokens, e.scores, top_k)} for e in found
        ],
        "_attributions": found,
    }
    if len(found) > 1:
        out["global"] = global_token_importance(found, k=top_k)
    return out

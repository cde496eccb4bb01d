"""Render chat messages (and tools) into a prompt with a model's own Jinja chat template.

GGUF files carry their template (``tokenizer.chat_template``); it is rendered in a sandboxed
Jinja environment, as transformers and llama.cpp's server do. Messages the OpenAI API allows
but plain templates do not know are rewritten first: an assistant turn's ``tool_calls`` become
its text in the form the model is asked to produce, and a template that takes no ``tools``
gets them as a system message.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from open_autoglm.errors import ValidationError
from open_autoglm.ml.text.tool_calls import call_text, tools_system_prompt

__all__ = ["ChatTemplate", "plain_transcript"]


def plain_transcript(messages: Sequence[Mapping[str, Any]]) -> str:
    """The prompt for a model without a template: a plain transcript ending in the reply."""
    return "".join(f"{m['role']}: {m.get('content') or ''}\n" for m in messages) + "assistant:"


@functools.lru_cache(maxsize=16)
def _compile(source: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValidationError(f"chat template: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


class ChatTemplate:
    """A model's chat template with its special tokens."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.takes_tools = "tools" in source

    def _messages(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for m in messages:
            message = dict(m)
            calls = message.get("tool_calls")
            if calls and "tool_calls" not in self.source:
                message["content"] = (message.get("content") or "") + call_text(calls)
                message.pop("tool_calls")
            message["content"] = message.get("content") or ""
            out.append(message)
        if tools and not self.takes_tools:
            prompt = tools_system_prompt(tools)
            if out and out[0]["role"] == "system":
                out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{prompt}"}
            else:
                out.insert(0, {"role": "system", "content": prompt})
        return out

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        from jinja2 import TemplateError

        extra: dict[str, Any] = {"tools": list(tools)} if tools and self.takes_tools else {}
        try:
            return str(
                _compile(self.source).render(
                    messages=self._messages(messages, tools or ()),
                    bos_token=self.bos_token,
                    eos_token=self.eos_token,
                    add_generation_prompt=add_generation_prompt,
                    **extra,
                )
            )
        except TemplateError as exc:
            raise ValidationError(
                f"the model's chat template failed on these messages: {exc}",
                details=[{"loc": ["messages"], "msg": str(exc)}],
            ) from None

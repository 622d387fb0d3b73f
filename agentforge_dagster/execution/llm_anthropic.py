"""The Anthropic provider (the messages API): see llm_providers."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import anthropic
from anthropic.types import Message, ToolUseBlock

from agentforge_dagster.execution.llm_providers import (  # the shared base
    ContentRefused,
    ContextTooLong,
    MalformedResponse,
    OutputTruncated,
    Prices,
    _SdkErrors,
    _SdkProvider,
    schema_name,
)
from agentforge_dagster.execution.providers import DEFAULT_PRICES, ModelRequest


class AnthropicProvider(_SdkProvider[anthropic.Anthropic, anthropic.APIStatusError]):
    """Anthropic's messages API (or a server that copies it), with the JSON instruction as system.

    A request with an object schema carries one tool whose ``input_schema`` is that schema and a
    ``tool_choice`` forcing it; the answer is the tool call's input. A server that ignores tools
    answers in text, which is taken as it is. ``timeout_s`` bounds each phase (connect, write,
    each read), not the whole call.
    """

    _default_name = "anthropic"
    _remaining_headers = (
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-tokens-remaining",
    )
    _answer_kind = "message"
    _structured_wording = re.compile(r"\btools?\b|tool_choice|input_schema|tool use", re.IGNORECASE)
    _errors = _SdkErrors(
        anthropic.APIStatusError,
        anthropic.APITimeoutError,
        anthropic.APIConnectionError,
        anthropic.APIResponseValidationError,
    )

    def __init__(
        self,
        model: str,
        api_key: str | None,
        base_url: str | None = None,
        timeout_s: float = 60.0,
        max_tokens: int = 4096,
        prices: Prices = DEFAULT_PRICES,
        *,
        structured_output: bool = True,
        name: str | None = None,
    ) -> None:
        self.max_tokens = max_tokens
        super().__init__(
            model,
            api_key,
            base_url,
            timeout_s,
            prices,
            structured_output=structured_output,
            name=name,
        )

    def _shown(self) -> dict[str, object]:
        return {**super()._shown(), "max_tokens": self.max_tokens}

    def _new_client(self, **options: Any) -> anthropic.Anthropic:
        return anthropic.Anthropic(**options)

    def _request(self, request: ModelRequest, system: str, *, structured: bool) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": system,
            "messages": [{"role": "user", "content": request.prompt}],
        }
        if structured:
            name = schema_name(request)
            arguments["tools"] = [
                {
                    "name": name,
                    "description": "Give your answer: its input is the answer itself.",
                    "input_schema": dict(request.output_schema),
                }
            ]
            arguments["tool_choice"] = {"type": "tool", "name": name}
        return arguments

    def _send(self, arguments: dict[str, Any]) -> tuple[object, Mapping[str, str]]:
        raw = self._client.messages.with_raw_response.create(**arguments)
        return raw.parse(), raw.headers

    def _error_text(self, err: anthropic.APIStatusError) -> tuple[str, str]:
        message = err.api_message or err.message
        return message, " ".join(
            str(part) for part in (message, err.type, err.error_code, err.body)
        )

    def _answer(self, message: object) -> tuple[str, tuple[int, int] | None]:
        if not isinstance(message, Message):
            raise self._failure(MalformedResponse, "the response is not a message")
        if message.stop_reason == "refusal":
            details = message.stop_details
            category = f" (category {details.category})" if details and details.category else ""
            raise self._failure(ContentRefused, f"the model refused to answer{category}")
        if message.stop_reason == "max_tokens":
            raise self._failure(OutputTruncated, f"the answer hit max_tokens={self.max_tokens}")
        if message.stop_reason == "model_context_window_exceeded":
            raise self._failure(ContextTooLong, "the conversation filled the context window")
        blocks = message.content or []
        calls = [b.input for b in blocks if isinstance(b, ToolUseBlock)]
        if calls:  # the forced tool was called: its input is the answer
            text = json.dumps(calls[0], ensure_ascii=False)
        else:  # a server that ignores tools (or none were sent) answers in text
            texts = [getattr(b, "text", None) for b in blocks if getattr(b, "type", None) == "text"]
            text = "".join(part for part in texts if isinstance(part, str))
        usage = message.usage
        if usage is None or usage.input_tokens is None:
            return text, None
        return text, (usage.input_tokens, usage.output_tokens or 0)

"""The Anthropic provider (the messages API): see .sdk, which they share."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import anthropic
from anthropic.types import Message, ToolUseBlock

from agentforge_dagster.domain.limits import MAX_PROVIDER_WAIT_S, MAX_RESPONSE_BYTES
from agentforge_dagster.execution.llm import wire as llm_wire
from agentforge_dagster.execution.llm.base import (
    DEFAULT_PRICES,
    ModelRequest,
)
from agentforge_dagster.execution.llm.sdk import (  # the shared base
    ContentRefused,
    ContextTooLong,
    MalformedResponse,
    OutputTruncated,
    Prices,
    _Answer,
    _document,
    _SdkErrors,
    _SdkProvider,
    _Sent,
    schema_name,
)


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
        max_wait_s: float = MAX_PROVIDER_WAIT_S,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
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
            max_wait_s=max_wait_s,
            max_response_bytes=max_response_bytes,
        )

    def _shown(self) -> dict[str, object]:
        return {**super()._shown(), "max_tokens": self.max_tokens}

    def _new_client(self, **options: Any) -> anthropic.Anthropic:
        wire = llm_wire.bounded_client(
            anthropic.DefaultHttpxClient,
            max_bytes=self.max_response_bytes,
            timeout=options["timeout"],
        )
        # The SDK would trace each call itself once a global tracer provider exists; the gateway's
        # span covers the call (docs/traces.md), and two would count its cost twice.
        return anthropic.Anthropic(http_client=wire, open_telemetry=False, **options)

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

    def _send(self, arguments: dict[str, Any]) -> _Sent:
        raw = self._client.messages.with_raw_response.create(**arguments)
        return _Sent(raw.parse(), raw.headers, _document(raw.http_response.content))

    def _error_text(self, err: anthropic.APIStatusError) -> tuple[str, str]:
        message = err.api_message or err.message
        return message, " ".join(
            str(part) for part in (message, err.type, err.error_code, err.body)
        )

    def _answer(self, message: object, document: Mapping[str, Any]) -> _Answer:
        # The SDK builds its models without validating them: any field may hold anything.
        if not isinstance(message, Message):
            raise self._failure(MalformedResponse, "the response is not a message")
        if getattr(message, "type", "message") == "error" or not hasattr(message, "content"):
            error = getattr(message, "error", None)
            said = f": it carries an error ({str(error)[:200]})" if error else ""
            raise self._failure(MalformedResponse, f"the response holds no message content{said}")
        stop_reason = getattr(message, "stop_reason", None)
        if stop_reason == "refusal":
            details = getattr(message, "stop_details", None)
            named = getattr(details, "category", None)
            category = f" (category {str(named)[:80]})" if named else ""
            raise self._failure(ContentRefused, f"the model refused to answer{category}")
        if stop_reason == "max_tokens":
            raise self._failure(OutputTruncated, f"the answer hit max_tokens={self.max_tokens}")
        if stop_reason == "model_context_window_exceeded":
            raise self._failure(ContextTooLong, "the conversation filled the context window")
        blocks = getattr(message, "content", None) or []
        if not isinstance(blocks, list):
            kind = type(blocks).__name__
            raise self._failure(MalformedResponse, f"the message's content is a {kind}, not blocks")
        calls = [b.input for b in blocks if isinstance(b, ToolUseBlock)]
        text: object
        if calls:  # the forced tool was called: its input is the answer
            if not isinstance(calls[0], dict):
                kind = type(calls[0]).__name__
                raise self._failure(MalformedResponse, f"the tool call's input is a {kind}")
            text = json.dumps(calls[0], ensure_ascii=False)
        else:  # a server that ignores tools (or none were sent) answers in text
            texts = [getattr(b, "text", None) for b in blocks if getattr(b, "type", None) == "text"]
            if any(not isinstance(part, str) for part in texts):
                raise self._failure(MalformedResponse, "a text block of the message is not text")
            text = "".join(part for part in texts if isinstance(part, str))
        usage = document.get("usage")  # as sent: the SDK would make "12" or true a count
        usage = usage if isinstance(usage, Mapping) else {}
        return _Answer(
            text=text,
            input_tokens=usage.get("input_tokens"),
            output_tokens=usage.get("output_tokens"),
            model=document.get("model"),
        )

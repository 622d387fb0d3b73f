"""The OpenAI-compatible provider (OpenAI, Ollama, vLLM, llama.cpp, LM Studio...): see llm_providers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from agentforge_dagster.execution.llm_providers import (  # the shared base
    ContentRefused,
    MalformedResponse,
    OutputTruncated,
    _SdkErrors,
    _SdkProvider,
    schema_name,
    strict_compatible,
)
from agentforge_dagster.execution.providers import ModelRequest


class OpenAICompatibleProvider(_SdkProvider[openai.OpenAI, openai.APIStatusError]):
    """Chat completions on OpenAI or any server that copies its API (Ollama, vLLM, llama.cpp...).

    A request with an object schema carries ``response_format={"type": "json_schema", ...}``
    unless ``structured_output=False`` or the server has rejected it (see the module docstring).
    A missing ``usage`` block (some local servers) falls back to :func:`estimate_tokens`.
    ``timeout_s`` bounds each phase (connect, write, each read), not the whole call.
    """

    _default_name = "openai"
    _answer_kind = "completion"
    _remaining_headers = ("x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens")
    _structured_wording = re.compile(
        r"response_format|json_schema|structured output|guided_json", re.IGNORECASE
    )
    _errors = _SdkErrors(
        openai.APIStatusError,
        openai.APITimeoutError,
        openai.APIConnectionError,
        openai.APIResponseValidationError,
    )

    def _new_client(self, **options: Any) -> openai.OpenAI:
        return openai.OpenAI(**options)

    def _request(self, request: ModelRequest, system: str, *, structured: bool) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": request.prompt},
            ],
        }
        if structured:
            arguments["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": schema_name(request),
                    "schema": dict(request.output_schema),
                    "strict": strict_compatible(request.output_schema),
                },
            }
        return arguments

    def _send(self, arguments: dict[str, Any]) -> tuple[object, Mapping[str, str]]:
        raw = self._client.chat.completions.with_raw_response.create(**arguments)
        return raw.parse(), raw.headers

    def _error_text(self, err: openai.APIStatusError) -> tuple[str, str]:
        body = err.body
        message = err.message
        if isinstance(body, Mapping) and isinstance(body.get("message"), str):
            message = body["message"]
        elif isinstance(body, str) and body.strip():
            message = body.strip()[:200]
        return message, " ".join(str(part) for part in (message, err.type, err.code, body))

    def _answer(self, completion: object) -> tuple[str, tuple[int, int] | None]:
        if not isinstance(completion, ChatCompletion) or not completion.choices:
            raise self._failure(MalformedResponse, "the response holds no completion choices")
        choice = completion.choices[0]
        message = choice.message
        refusal = getattr(message, "refusal", None) if message is not None else None
        if choice.finish_reason == "content_filter" or refusal:
            reason = f": {refusal}" if refusal else ""
            raise self._failure(
                ContentRefused, f"the answer was withheld by a content filter{reason}"
            )
        if choice.finish_reason == "length":
            raise self._failure(OutputTruncated, "the answer hit the output-token limit")
        text = (message.content if message is not None else None) or ""
        usage = completion.usage
        if usage is None or usage.prompt_tokens is None:
            return text, None
        return text, (usage.prompt_tokens, usage.completion_tokens or 0)

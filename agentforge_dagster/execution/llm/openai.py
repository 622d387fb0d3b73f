"""The OpenAI-compatible provider (OpenAI, Ollama, vLLM, llama.cpp, LM Studio...): see .sdk, which they share."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from agentforge_dagster.execution.llm import wire as llm_wire
from agentforge_dagster.execution.llm.base import ModelRequest
from agentforge_dagster.execution.llm.sdk import (  # the shared base
    ContentRefused,
    MalformedResponse,
    OutputTruncated,
    _Answer,
    _document,
    _SdkErrors,
    _SdkProvider,
    _Sent,
    schema_name,
    strict_compatible,
)


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
        wire = llm_wire.bounded_client(
            openai.DefaultHttpxClient, max_bytes=self.max_response_bytes, timeout=options["timeout"]
        )
        return openai.OpenAI(http_client=wire, **options)

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

    def _send(self, arguments: dict[str, Any]) -> _Sent:
        raw = self._client.chat.completions.with_raw_response.create(**arguments)
        return _Sent(raw.parse(), raw.headers, _document(raw.http_response.content))

    def _error_text(self, err: openai.APIStatusError) -> tuple[str, str]:
        body = err.body
        message = err.message
        if isinstance(body, Mapping) and isinstance(body.get("message"), str):
            message = body["message"]
        elif isinstance(body, str) and body.strip():
            message = body.strip()[:200]
        return message, " ".join(str(part) for part in (message, err.type, err.code, body))

    def _answer(self, completion: object, document: Mapping[str, Any]) -> _Answer:
        # The SDK builds its models without validating them: any field may hold anything.
        choices = (
            getattr(completion, "choices", None) if isinstance(completion, ChatCompletion) else None
        )
        if not isinstance(choices, list) or not choices:
            error = (
                getattr(completion, "error", None)
                if isinstance(completion, ChatCompletion)
                else None
            )
            said = f": it carries an error ({str(error)[:200]})" if error else ""
            raise self._failure(
                MalformedResponse, f"the response holds no completion choices{said}"
            )
        choice = choices[0]
        message = getattr(choice, "message", None)
        refusal = getattr(message, "refusal", None) if message is not None else None
        if not isinstance(refusal, str | None):
            refusal = str(refusal)[:200]
        if getattr(choice, "finish_reason", None) == "content_filter" or refusal:
            reason = f": {refusal}" if refusal else ""
            raise self._failure(
                ContentRefused, f"the answer was withheld by a content filter{reason}"
            )
        if getattr(choice, "finish_reason", None) == "length":
            raise self._failure(OutputTruncated, "the answer hit the output-token limit")
        text = getattr(message, "content", None) if message is not None else None
        usage = document.get("usage")  # as sent: the SDK would make "12" or true a count
        usage = usage if isinstance(usage, Mapping) else {}
        return _Answer(
            text="" if text is None else text,
            input_tokens=usage.get("prompt_tokens"),
            output_tokens=usage.get("completion_tokens"),
            model=document.get("model"),
        )

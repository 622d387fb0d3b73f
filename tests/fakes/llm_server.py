"""A scriptable fake LLM server: real HTTP on 127.0.0.1, speaking enough OpenAI and Anthropic.

The provider tests use the official SDKs unchanged, so the fake has to answer over a real socket
with realistic bodies and headers; nothing of ours is mocked. Each request consumes one scripted
behaviour (falling back to the default "ok" answer) and is recorded, so a test can count requests,
read the headers the SDK sent and measure the waits between arrivals.

The dialect follows the path: ``POST /v1/chat/completions`` answers like OpenAI (and the servers
that copy it: Ollama, vLLM, llama.cpp, LM Studio), ``POST /v1/messages`` like Anthropic.

Structured output (OpenAI ``response_format``, Anthropic tools) is handled three ways, because
real servers differ, and each is a path of the providers to keep tested:

* ``structured="honour"`` (the default), like the real APIs: a malformed ``json_schema`` request
  (a bad name, a non-object schema, ``strict: true`` on a schema strict mode refuses) is a 400
  worded as OpenAI words it, and a forced Anthropic tool is answered with a ``tool_use`` block
  whose input is the scripted answer (when that answer is a JSON object).
* ``structured="ignore"``: accepted and ignored, the answer comes as plain text (many local
  servers), so the gateway's validation and re-prompt loop do the work.
* ``structured="reject"``: a 400 saying the feature is not supported (servers that refuse
  unknown parameters); such requests consume no scripted behaviour.

A provider's answer is untrusted input, so the fake can lie in every way a provider might
(:func:`lying`): usage counts that are negative, absurd or not numbers, another model than the
one asked for, fields of the wrong type, a body of any bytes, a body of any size, a body dripped
a few bytes at a time, a ``Content-Length`` that lies, a compressed bomb; in either dialect.
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

Dialect = Literal["openai", "anthropic"]
Answer = str | Callable[[dict[str, Any]], str]
Structured = Literal["honour", "ignore", "reject"]

DEFAULT_ANSWER = '{"ok": true}'


@dataclass(frozen=True)
class Behaviour:
    """How the server answers one request; build these with the functions below."""

    kind: Literal[
        "ok", "status", "hang", "truncated", "invalid_json", "refusal", "disconnect", "lie"
    ]
    content: Answer | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    include_usage: bool = True
    finish_reason: str | None = None
    status_code: int = 200
    retry_after: str | None = None
    retry_after_ms: str | None = None
    body: Mapping[str, Any] | str | None = None
    seconds: float = 0.0
    then: Behaviour | None = None
    flavour: Literal["context_length", "content_policy"] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    lie: Lie | None = None


_UNSET: Any = object()


@dataclass(frozen=True)
class Lie:
    """What a lying answer says instead of the truth (see :func:`lying`); unset parts are true."""

    content: Answer = DEFAULT_ANSWER
    input_tokens: Any = _UNSET
    output_tokens: Any = _UNSET
    model: Any = _UNSET
    fields: Mapping[str, Any] = field(default_factory=dict)
    raw: bytes | None = None
    size: int | None = None
    content_length: int | None = None
    no_length: bool = False
    gzip: bool = False
    drip_bytes: int = 0
    drip_delay_s: float = 0.0
    status_code: int = 200


def lying(
    content: Answer = DEFAULT_ANSWER,
    *,
    input_tokens: Any = _UNSET,
    output_tokens: Any = _UNSET,
    model: Any = _UNSET,
    fields: Mapping[str, Any] | None = None,
    raw: bytes | None = None,
    size: int | None = None,
    content_length: int | None = None,
    no_length: bool = False,
    gzip: bool = False,
    drip_bytes: int = 0,
    drip_delay_s: float = 0.0,
    status_code: int = 200,
) -> Behaviour:
    """An answer that lies; each option is one lie, in the request's dialect:

    ``input_tokens`` / ``output_tokens``: the usage counts sent, any JSON value (``None`` sends
    no usage block); ``model``: the model the body says answered; ``fields``: top-level fields
    of the body replaced as given (``choices``, ``content``, ``error``...); ``raw``: the body's
    bytes verbatim instead; ``size``: the body padded (a field of its own) to about this many bytes;
    ``content_length``: the ``Content-Length`` header sent, whatever the body's length (the
    connection closes after the body); ``no_length``: no ``Content-Length`` at all, the body
    ends when the connection closes (so only reading tells its size); ``gzip``: the body gzip-compressed (a bomb when it is
    large and repetitive); ``drip_bytes`` / ``drip_delay_s``: the body sent that many bytes at a
    time with that pause between them; ``status_code``: the status sent with it.
    """
    return Behaviour(
        kind="lie",
        lie=Lie(
            content=content,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            model=model,
            fields=dict(fields or {}),
            raw=raw,
            size=size,
            content_length=content_length,
            no_length=no_length,
            gzip=gzip,
            drip_bytes=drip_bytes,
            drip_delay_s=drip_delay_s,
            status_code=status_code,
        ),
    )


def ok(
    content: Answer = DEFAULT_ANSWER,
    *,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    include_usage: bool = True,
    finish_reason: str | None = None,
) -> Behaviour:
    """A normal answer. ``content`` is the text the model "says", or a function of the request body.

    Token counts default to about four characters a token of the prompt and the answer;
    ``include_usage=False`` leaves usage out, as some local servers do.
    ``finish_reason`` overrides "stop" / "end_turn" (e.g. "length" / "max_tokens").
    """
    return Behaviour(
        kind="ok",
        content=content,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        include_usage=include_usage,
        finish_reason=finish_reason,
    )


def status(
    code: int,
    retry_after: float | str | None = None,
    body: Mapping[str, Any] | str | None = None,
    *,
    retry_after_ms: float | str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Behaviour:
    """An HTTP error with the provider's realistic error body (or ``body`` verbatim).

    ``retry_after`` is sent as the ``Retry-After`` header: a number of seconds or an HTTP-date.
    """
    return Behaviour(
        kind="status",
        status_code=code,
        retry_after=None if retry_after is None else _header_value(retry_after),
        retry_after_ms=None if retry_after_ms is None else _header_value(retry_after_ms),
        body=body,
        headers=dict(headers or {}),
    )


def context_too_long() -> Behaviour:
    """A 400 worded the way each provider reports a prompt longer than the context window."""
    return Behaviour(kind="status", status_code=400, flavour="context_length")


def content_policy_rejection() -> Behaviour:
    """A 400 worded the way each provider rejects a prompt on content-policy grounds."""
    return Behaviour(kind="status", status_code=400, flavour="content_policy")


def hang(seconds: float, then: Behaviour | None = None) -> Behaviour:
    """Wait ``seconds`` before answering (with ``then``, default ok), to trip client timeouts."""
    return Behaviour(kind="hang", seconds=seconds, then=then)


def truncated() -> Behaviour:
    """A 200 whose Content-Length promises more than is sent before the connection closes."""
    return Behaviour(kind="truncated")


def invalid_json() -> Behaviour:
    """A 200 labelled application/json whose body is not JSON."""
    return Behaviour(kind="invalid_json")


def refusal() -> Behaviour:
    """A 200 where the model refuses: OpenAI finish_reason "content_filter", Anthropic "refusal"."""
    return Behaviour(kind="refusal")


def disconnect() -> Behaviour:
    """Close the connection without answering at all."""
    return Behaviour(kind="disconnect")


@dataclass(frozen=True)
class ProviderLimits:
    """A provider's real limits, enforced by the fake like the hosted APIs enforce theirs.

    Over ``requests_per_minute``, ``tokens_per_minute`` (the prompt's tokens plus ``max_tokens``,
    or 1,000) or ``concurrency``, a request gets 429 with ``Retry-After`` (seconds) and the
    provider's rate-limit headers (OpenAI ``x-ratelimit-*``, Anthropic ``anthropic-ratelimit-*``),
    which successful answers carry too. ``latency_s`` delays every answer; ``fault_rate`` of the
    requests (seeded) get a 500, a hang of ``hang_s`` then a 500, or garbage, in turn.
    """

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrency: int | None = None
    latency_s: float = 0.0
    fault_rate: float = 0.0
    hang_s: float = 2.0
    seed: int = 0


def user_prompt(body: Mapping[str, Any]) -> str:
    """The text of the last user message in an OpenAI or Anthropic request body."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return "".join(
                part.get("text", "") for part in content or [] if isinstance(part, Mapping)
            )
    return ""


@dataclass
class RecordedRequest:
    """One request as the server saw it; header names are lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    raw_body: bytes
    body: Any
    arrived_at: float
    behaviour: str = ""
    finished_at: float | None = None
    client_gone: bool = False
    client_port: int = 0  # the client's end of the TCP connection: one port, one connection
    usage: tuple[int, int] | None = None  # (input, output) tokens of an answer the caller pays for


def _rate_limit_headers(
    dialect: Dialect, limits: ProviderLimits, requests: int, tokens: int, reset_s: float
) -> dict[str, str]:
    """The provider's rate-limit headers for the minute's use so far."""
    headers: dict[str, str] = {}
    reset = f"{reset_s:.1f}s"
    if dialect == "openai":
        if limits.requests_per_minute is not None:
            headers["x-ratelimit-limit-requests"] = str(limits.requests_per_minute)
            headers["x-ratelimit-remaining-requests"] = str(
                max(0, limits.requests_per_minute - requests)
            )
            headers["x-ratelimit-reset-requests"] = reset
        if limits.tokens_per_minute is not None:
            headers["x-ratelimit-limit-tokens"] = str(limits.tokens_per_minute)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, limits.tokens_per_minute - tokens))
            headers["x-ratelimit-reset-tokens"] = reset
    else:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + reset_s))
        if limits.requests_per_minute is not None:
            headers["anthropic-ratelimit-requests-limit"] = str(limits.requests_per_minute)
            headers["anthropic-ratelimit-requests-remaining"] = str(
                max(0, limits.requests_per_minute - requests)
            )
            headers["anthropic-ratelimit-requests-reset"] = when
        if limits.tokens_per_minute is not None:
            headers["anthropic-ratelimit-tokens-limit"] = str(limits.tokens_per_minute)
            headers["anthropic-ratelimit-tokens-remaining"] = str(
                max(0, limits.tokens_per_minute - tokens)
            )
            headers["anthropic-ratelimit-tokens-reset"] = when
    return headers


def _header_value(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def _approx_tokens(text: str) -> int:
    return max(1, len(text) // 4)


_OPENAI_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid value for 'messages'.", "invalid_request_error", None),
    401: (
        "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        "invalid_api_key",
    ),
    403: ("You are not allowed to sample from this model.", "invalid_request_error", None),
    404: (
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    422: ("Unprocessable request.", "invalid_request_error", None),
    429: (
        "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. "
        "Please try again in 20s.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
    504: ("Gateway timeout.", "server_error", None),
    529: ("Overloaded.", "server_error", None),
}
_ANTHROPIC_ERRORS: dict[int, tuple[str, str]] = {
    400: ("messages: text content blocks must be non-empty", "invalid_request_error"),
    401: ("invalid x-api-key", "authentication_error"),
    403: (
        "Your API key does not have permission to use the specified resource.",
        "permission_error",
    ),
    404: ("model: not found", "not_found_error"),
    413: ("Request exceeds the maximum allowed number of bytes.", "request_too_large"),
    422: ("Unprocessable request.", "invalid_request_error"),
    429: (
        "This request would exceed the rate limit for your organization of 50 requests per minute.",
        "rate_limit_error",
    ),
    500: ("Internal server error", "api_error"),
    502: ("Bad gateway", "api_error"),
    503: ("Service unavailable", "api_error"),
    504: ("Request timed out", "timeout_error"),
    529: ("Overloaded", "overloaded_error"),
}


def _strict_problem(schema: object, context: tuple[str, ...] = ()) -> str | None:
    """Why OpenAI's strict mode would refuse ``schema`` (first problem found), or None."""
    if isinstance(schema, list):
        for index, item in enumerate(schema):
            problem = _strict_problem(item, (*context, str(index)))
            if problem:
                return problem
        return None
    if not isinstance(schema, Mapping):
        return None
    properties = schema.get("properties")
    fields = properties if isinstance(properties, Mapping) else {}
    if schema.get("type") == "object" or fields:
        if schema.get("additionalProperties") is not False:
            return (
                f"In context={context}, 'additionalProperties' is required to be supplied and "
                "to be false."
            )
        missing = [name for name in fields if name not in (schema.get("required") or [])]
        if missing:
            return (
                f"In context={context}, 'required' is required to be supplied and to be an array "
                f"including every key in properties. Missing '{missing[0]}'."
            )
    for key, value in schema.items():
        if key == "properties":
            children = value.items() if isinstance(value, Mapping) else ()
            for name, child in children:
                problem = _strict_problem(child, (*context, "properties", str(name)))
                if problem:
                    return problem
        elif isinstance(value, (Mapping, list)):
            problem = _strict_problem(value, (*context, key))
            if problem:
                return problem
    return None


def _structured_error(dialect: Dialect, body: Any, mode: Structured) -> dict[str, Any] | None:
    """The 400 body this server gives a request for structured output, or None if it takes it."""
    if mode == "ignore" or not isinstance(body, Mapping):
        return None
    if dialect == "openai":
        response_format = body.get("response_format")
        if not isinstance(response_format, Mapping):
            return None
        if mode == "reject":
            message = f"response_format of type '{response_format.get('type')}' is not supported"
            return {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": "response_format",
                    "code": None,
                }
            }
        return _openai_format_error(response_format)
    if not body.get("tools"):
        return None
    if mode == "reject":
        return {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "tools: Extra inputs are not permitted",
            },
        }
    return None


def _openai_format_error(response_format: Mapping[str, Any]) -> dict[str, Any] | None:
    """OpenAI's 400 for a malformed ``response_format`` (the checks it makes first), or None."""
    kind = response_format.get("type")
    problem: str | None = None
    if kind not in ("json_schema", "json_object", "text"):
        problem = f"Invalid value: '{kind}'. Supported values are: 'json_object', 'json_schema'."
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        spec = spec if isinstance(spec, Mapping) else {}
        name = spec.get("name")
        schema = spec.get("schema")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            problem = (
                "Invalid 'response_format.json_schema.name': must match ^[a-zA-Z0-9_-]{1,64}$."
            )
        elif not isinstance(schema, Mapping) or schema.get("type") != "object":
            problem = f"Invalid schema for response_format '{name}': schema must be an object."
        elif spec.get("strict") is True:
            reason = _strict_problem(schema)
            if reason:
                problem = f"Invalid schema for response_format '{name}': {reason}"
    if problem is None:
        return None
    return {
        "error": {
            "message": problem,
            "type": "invalid_request_error",
            "param": "response_format",
            "code": None,
        }
    }


def _forced_tool(body: Mapping[str, Any]) -> str | None:
    """The tool an Anthropic request forces (``tool_choice`` of type ``tool``), if any."""
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") == "tool" and body.get("tools"):
        name = choice.get("name")
        return name if isinstance(name, str) else None
    return None


def _error_body(dialect: Dialect, code: int, flavour: str | None) -> dict[str, Any]:
    """A realistic error body for ``code`` in ``dialect``; ``flavour`` picks a special 400."""
    message: str
    kind: str
    err_code: str | None
    if dialect == "openai":
        if flavour == "context_length":
            message, kind, err_code = (
                "This model's maximum context length is 8192 tokens. However, your messages "
                "resulted in 9000 tokens. Please reduce the length of the messages.",
                "invalid_request_error",
                "context_length_exceeded",
            )
        elif flavour == "content_policy":
            message, kind, err_code = (
                "Your request was rejected as a result of our safety system. Your prompt may "
                "contain text that is not allowed by our content policy.",
                "invalid_request_error",
                "content_policy_violation",
            )
        else:
            message, kind, err_code = _OPENAI_ERRORS.get(code, ("Error.", "server_error", None))
        return {"error": {"message": message, "type": kind, "param": None, "code": err_code}}
    if flavour == "context_length":
        message, kind = (
            "prompt is too long: 210000 tokens > 200000 maximum",
            "invalid_request_error",
        )
    elif flavour == "content_policy":
        message, kind = (
            "Output blocked by content filtering policy",
            "invalid_request_error",
        )
    else:
        message, kind = _ANTHROPIC_ERRORS.get(code, ("Error", "api_error"))
    return {"type": "error", "error": {"type": kind, "message": message}}


class _Handler(BaseHTTPRequestHandler):
    """Answers one request with the next scripted behaviour."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the recorded requests are the log."""

    def handle(self) -> None:
        """Serve one connection (several requests with keep-alive), counting it while it is open."""
        fake = self.server.fake
        with fake._lock:
            fake._open_connections += 1
        try:
            super().handle()
        finally:
            with fake._lock:
                fake._open_connections -= 1

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
            raw_body=raw,
            body=body,
            arrived_at=time.monotonic(),
            client_port=int(self.client_address[1]),
        )
        fake = self.server.fake
        dialect = self._dialect()
        refused = _structured_error(dialect, body, fake.structured) if dialect else None
        if refused is not None:  # the server refuses the request itself: no script is consumed
            record.behaviour = "structured_refused"
            fake._record(record)
            self._send_json(400, refused)
            record.finished_at = time.monotonic()
            return
        limited = fake._admit(dialect, body) if dialect and fake.limits is not None else None
        if limited is not None and limited[0] is not None:  # over a limit: 429, nothing consumed
            record.behaviour = "rate_limited"
            fake._record(record)
            fake.rate_limited += 1
            self._send_json(429, _error_body(dialect or "openai", 429, None), headers=limited[0])
            record.finished_at = time.monotonic()
            return
        behaviour = fake._next_behaviour()
        if limited is not None:
            behaviour = fake._limited_behaviour(behaviour)
        record.behaviour = behaviour.kind
        fake._record(record)
        try:
            if limited is not None and fake.limits is not None and fake.limits.latency_s:
                time.sleep(fake.limits.latency_s)
            self._rate_headers = limited[1] if limited is not None else {}
            self._perform(behaviour, record)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (e.g. its timeout fired during a hang); that is the point.
            record.client_gone = True
            self.close_connection = True
        finally:
            if limited is not None:
                fake._release()
        record.finished_at = time.monotonic()

    def _dialect(self) -> Dialect | None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path.endswith("/chat/completions"):
            return "openai"
        if path.endswith("/messages"):
            return "anthropic"
        return None

    def _perform(self, behaviour: Behaviour, record: RecordedRequest) -> None:
        dialect = self._dialect()
        if dialect is None:
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "x"}})
            return
        kind = behaviour.kind
        if kind == "hang":
            if self.server.fake._stopping.wait(behaviour.seconds):
                self.close_connection = True
                return
            self._perform(behaviour.then or self.server.fake.default, record)
        elif kind == "disconnect":
            self.close_connection = True
        elif kind == "status":
            self._send_status(dialect, behaviour)
        elif kind == "invalid_json":
            self._send_raw(200, b'{"id": "chatcmpl-broken", "choices": [{"index": 0, "mess')
        elif kind == "truncated":
            full = json.dumps(self._success_body(dialect, ok(), record.body)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(full)))
            self.end_headers()
            self.wfile.write(full[: len(full) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif kind == "refusal":
            self._send_json(200, self._refusal_body(dialect, record.body))
        elif kind == "lie":
            assert behaviour.lie is not None
            self._send_lie(dialect, behaviour.lie, record)
        else:
            headers = getattr(self, "_rate_headers", {})
            self._send_json(
                200, self._success_body(dialect, behaviour, record.body), headers=headers
            )
            record.usage = self._usage  # sent in full: the caller is billed for it

    def _send_lie(self, dialect: Dialect, lie: Lie, record: RecordedRequest) -> None:
        """One lying answer (see :func:`lying`)."""
        payload = lie.raw
        if payload is None:
            body = self._success_body(dialect, ok(lie.content), record.body)
            if lie.size is not None:  # a field no SDK reads: the answer itself stays as it is
                body["padding"] = "x" * max(0, lie.size - len(json.dumps(body)))
            counts = {"input_tokens": lie.input_tokens, "output_tokens": lie.output_tokens}
            names = (
                {"input_tokens": "prompt_tokens", "output_tokens": "completion_tokens"}
                if dialect == "openai"
                else {"input_tokens": "input_tokens", "output_tokens": "output_tokens"}
            )
            if None in counts.values():
                body.pop("usage", None)
            else:
                for ours, theirs in names.items():
                    if counts[ours] is not _UNSET:
                        body["usage"][theirs] = counts[ours]
            if lie.model is not _UNSET:
                body["model"] = lie.model
            body.update(lie.fields)
            payload = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if lie.gzip:
            payload = gzip.compress(payload)
            headers["Content-Encoding"] = "gzip"
        length = len(payload) if lie.content_length is None else lie.content_length
        self.send_response(lie.status_code)
        for name, value in headers.items():
            self.send_header(name, value)
        if lie.no_length:
            self.send_header("Connection", "close")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        if lie.content_length is not None or lie.no_length:
            self.close_connection = True
        step = lie.drip_bytes or len(payload) or 1
        for start in range(0, len(payload), step):
            if start and lie.drip_delay_s and self.server.fake._stopping.wait(lie.drip_delay_s):
                break
            self.wfile.write(payload[start : start + step])
            self.wfile.flush()
        record.usage = None  # a lie is nobody's bill

    def _send_status(self, dialect: Dialect, behaviour: Behaviour) -> None:
        headers = dict(behaviour.headers)
        if behaviour.retry_after is not None:
            headers["Retry-After"] = behaviour.retry_after
        if behaviour.retry_after_ms is not None:
            headers["retry-after-ms"] = behaviour.retry_after_ms
        if isinstance(behaviour.body, str):
            self._send_raw(behaviour.status_code, behaviour.body.encode(), headers=headers)
            return
        body = (
            dict(behaviour.body)
            if behaviour.body is not None
            else _error_body(dialect, behaviour.status_code, behaviour.flavour)
        )
        self._send_json(behaviour.status_code, body, headers=headers)

    def _success_body(
        self, dialect: Dialect, behaviour: Behaviour, request_body: Any
    ) -> dict[str, Any]:
        request = request_body if isinstance(request_body, dict) else {}
        answer = behaviour.content if behaviour.content is not None else DEFAULT_ANSWER
        text = answer(request) if callable(answer) else answer
        prompt_text = json.dumps(request.get("messages", [])) + str(request.get("system", ""))
        input_tokens = behaviour.input_tokens or _approx_tokens(prompt_text)
        output_tokens = behaviour.output_tokens or _approx_tokens(text)
        serial = next(self.server.fake._ids)
        model = request.get("model", "unknown-model")
        self._usage = (input_tokens, output_tokens)
        if dialect == "openai":
            body: dict[str, Any] = {
                "id": f"chatcmpl-fake-{serial}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": behaviour.finish_reason or "stop",
                    }
                ],
            }
            if behaviour.include_usage:
                body["usage"] = {
                    "prompt_tokens": input_tokens,
                    "completion_tokens": output_tokens,
                    "total_tokens": input_tokens + output_tokens,
                }
            return body
        content: dict[str, Any] = {"type": "text", "text": text}
        stop_reason = "end_turn"
        tool = _forced_tool(request) if self.server.fake.structured == "honour" else None
        if tool is not None:
            try:
                answer_object = json.loads(text)
            except ValueError:
                answer_object = None
            if isinstance(answer_object, dict):  # else the scripted text stays a text block
                tool_id = f"toolu_fake_{serial}"
                content = {"type": "tool_use", "id": tool_id, "name": tool, "input": answer_object}
                stop_reason = "tool_use"
        body = {
            "id": f"msg_fake_{serial}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [content],
            "stop_reason": behaviour.finish_reason or stop_reason,
            "stop_sequence": None,
        }
        if behaviour.include_usage:
            body["usage"] = {"input_tokens": input_tokens, "output_tokens": output_tokens}
        return body

    def _refusal_body(self, dialect: Dialect, request_body: Any) -> dict[str, Any]:
        request = request_body if isinstance(request_body, dict) else {}
        model = request.get("model", "unknown-model")
        if dialect == "openai":
            return {
                "id": "chatcmpl-fake-refusal",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": None, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "content_filter",
                    }
                ],
                "usage": {"prompt_tokens": 20, "completion_tokens": 0, "total_tokens": 20},
            }
        return {
            "id": "msg_fake_refusal",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": "refusal",
            "stop_details": {"type": "refusal", "category": None, "explanation": None},
            "stop_sequence": None,
            "usage": {"input_tokens": 20, "output_tokens": 0},
        }

    def _send_json(
        self, code: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        self._send_raw(code, json.dumps(body).encode(), headers=headers)

    def _send_raw(
        self, code: int, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        request_id = f"req_fake_{next(self.server.fake._ids)}"
        self.send_header("x-request-id", request_id)
        self.send_header("request-id", request_id)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, fake: FakeLLMServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class FakeLLMServer:
    """The fake server; use as a context manager (or ``start()``/``stop()``).

    ``default`` answers every request the script does not cover; ``answer`` is a shortcut for
    ``default=ok(answer)`` (a string, or a function of the request body). ``structured`` says how
    requests for structured output are met (see the module docstring); it may be changed while
    the server runs.
    """

    def __init__(
        self,
        default: Behaviour | None = None,
        *,
        answer: Answer | None = None,
        structured: Structured = "honour",
        limits: ProviderLimits | None = None,
    ) -> None:
        if default is not None and answer is not None:
            raise ValueError("give either default or answer, not both")
        self.default = default or ok(answer if answer is not None else DEFAULT_ANSWER)
        self.structured: Structured = structured
        self._script: deque[Behaviour] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ids = itertools.count(1)
        self._open_connections = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.limits = limits
        self.rate_limited = 0  # 429s answered
        self.most_at_once = 0
        self._in_flight = 0
        self._window: deque[tuple[float, int]] = deque()  # (arrival, tokens) of the last minute
        self._faults = random.Random(limits.seed if limits is not None else 0)
        self._fault_turn = itertools.count()

    def start(self) -> FakeLLMServer:
        if self._server is not None:
            raise RuntimeError("the fake LLM server is already running")
        self._stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-llm-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake LLM server is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:54321``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """What to give the OpenAI SDK as ``base_url`` (it appends ``/chat/completions``)."""
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """What to give the Anthropic SDK as ``base_url`` (it appends ``/v1/messages``)."""
        return self.url

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours; each request consumes one, then the default answers."""
        with self._lock:
            self._script.extend(behaviours)

    @property
    def pending(self) -> int:
        """How many scripted behaviours are still unconsumed."""
        with self._lock:
            return len(self._script)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def open_connections(self) -> int:
        """How many client connections are open now (a closed client closes its pooled ones)."""
        with self._lock:
            return self._open_connections

    def clear(self) -> None:
        """Forget the recorded requests and any unconsumed script."""
        with self._lock:
            self._requests.clear()
            self._script.clear()

    def _admit(self, dialect: Dialect, body: Any) -> tuple[dict[str, str] | None, dict[str, str]]:
        """Count the request against the limits: (429 headers or None, headers of the answer)."""
        limits = self.limits
        assert limits is not None
        request = body if isinstance(body, dict) else {}
        tokens = _approx_tokens(json.dumps(request.get("messages", []))) + int(
            request.get("max_tokens") or request.get("max_completion_tokens") or 1000
        )
        now = time.monotonic()
        with self._lock:
            while self._window and now - self._window[0][0] >= 60:
                self._window.popleft()
            used_requests = len(self._window)
            used_tokens = sum(t for _at, t in self._window)
            oldest = self._window[0][0] if self._window else now
            reset = max(0.0, 60 - (now - oldest))
            over = (
                (
                    limits.requests_per_minute is not None
                    and used_requests + 1 > limits.requests_per_minute
                )
                or (
                    limits.tokens_per_minute is not None
                    and used_tokens + tokens > limits.tokens_per_minute
                )
                or (limits.concurrency is not None and self._in_flight >= limits.concurrency)
            )
            if not over:
                self._window.append((now, tokens))
                self._in_flight += 1
                self.most_at_once = max(self.most_at_once, self._in_flight)
                used_requests += 1
                used_tokens += tokens
        headers = _rate_limit_headers(dialect, limits, used_requests, used_tokens, reset)
        if over:
            wait = (
                reset if limits.concurrency is None or self._in_flight < limits.concurrency else 1
            )
            return {**headers, "Retry-After": str(max(1, math.ceil(wait)))}, headers
        return None, headers

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _limited_behaviour(self, behaviour: Behaviour) -> Behaviour:
        """The scripted behaviour, or (at ``fault_rate``) a 500, a hang then a 500, or garbage."""
        limits = self.limits
        if limits is None or not limits.fault_rate or self._faults.random() >= limits.fault_rate:
            return behaviour
        turn = next(self._fault_turn) % 3
        if turn == 0:
            return status(500)
        if turn == 1:
            return hang(limits.hang_s, then=status(500))
        return invalid_json()

    def _next_behaviour(self) -> Behaviour:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    def _record(self, record: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(record)

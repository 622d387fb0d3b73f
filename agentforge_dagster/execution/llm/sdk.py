"""Real model providers: any OpenAI-compatible chat-completions server, and Anthropic's messages API.

Both use the official SDKs with the SDKs' own retries turned off (``max_retries=0``): one
``complete()`` is one HTTP request, and every failure is translated into our transient/permanent
classes so the Dagster retry policy is the single place that decides whether to try again (and
how long to wait, from ``retry_after``).

What the SDK versions this was written against actually do (openai 3.57, anthropic 2.14, both on
``httpx2``):

* HTTP errors are ``APIStatusError`` subclasses carrying ``status_code`` and an ``httpx2.Headers``
  ``response.headers``; the OpenAI SDK reports 529 as a plain ``InternalServerError``, the
  Anthropic SDK as ``OverloadedError``.
* Client timeouts are ``APITimeoutError`` (a subclass of ``APIConnectionError``); a dropped or
  truncated response body is ``APIConnectionError`` caused by ``httpx2.RemoteProtocolError``.
* A 200 whose body is not JSON raises a bare ``json.JSONDecodeError`` from both SDKs (not an SDK
  exception), and a 200 with a non-JSON content type makes the OpenAI SDK return a ``str``.
* Both send the key as ``Authorization: Bearer ...`` (the Anthropic SDK no longer sends
  ``x-api-key``), and the Anthropic SDK logs whole request bodies (prompts) at DEBUG.

Every field of an answer is untrusted input, bounded and validated at the wire
(:mod:`~agentforge_dagster.execution.llm.wire` reads it): at most ``max_response_bytes`` are
read, and a body over the cap, not UTF-8, nested past the parser, or of the wrong shape is a
:class:`MalformedResponse` naming the provider; the whole call, body included, ends by
``timeout_s`` (a drip is a :class:`ProviderTimeout`); a wait asked for (``Retry-After``) longer
than ``max_wait_s`` is refused (:class:`RateLimited`, the asked-for wait kept as
``asked_wait_s``, the wait used capped); a token count that is not a whole number between 1 and
``MAX_TOKEN_COUNT`` (domain/limits.py) is estimated instead, so a cost is never negative; and the model the body
says answered is kept (``served_model``) and priced when the table knows it.

The API key never appears in our messages: provider text is scrubbed of it, and an SDK exception
is chained as ``__cause__`` only when its traceback does not mention the key either.

Answers are asked for as structured output, because a server that enforces the schema saves the
re-prompts a free-text answer costs: OpenAI-style servers get ``response_format`` with a
``json_schema`` (strict when the schema meets strict mode's rules), Anthropic gets a tool whose
``input_schema`` is the output schema and a ``tool_choice`` that forces it. Many OpenAI-compatible
servers lack one or the other; a server that ignores it answers in text as before (the gateway's
re-prompt loop still validates), and one that rejects it with a 4xx naming it is asked again at
once without it, and not asked for it again by this provider. A provider lives for one run (the
model resource builds and closes it), so that memory is per run.

The providers live one module per SDK (:mod:`.openai`, :mod:`.anthropic`), each importing this
module and never the other way round; :mod:`.registry` names them, so a run imports only the SDK
its model chain uses: importing the Anthropic SDK cost a run worker about a quarter of its CPU when
the chain named OpenAI only.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import re
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, NoReturn, Protocol, TypeVar

from agentforge_dagster.domain.errors import (
    AgentForgeError,
    ContentRefusal,
    PermanentError,
    ProviderRateLimited,
    TransientError,
)
from agentforge_dagster.domain.limits import MAX_PROVIDER_WAIT_S, MAX_RESPONSE_BYTES
from agentforge_dagster.execution.llm import wire as llm_wire
from agentforge_dagster.execution.llm.base import (  # DEFAULT_PRICES is re-exported
    DEFAULT_PRICES,
    ModelRequest,
    ModelResponse,
    estimate_tokens,
    served_model,
    token_count,
)

log = logging.getLogger(__name__)

Prices = Mapping[str, tuple[float, float]]

# Placeholder sent to servers that need no key (Ollama, vLLM, llama.cpp, LM Studio).
NO_KEY_PLACEHOLDER = "not-needed"
# Keys shorter than this are placeholders like "ollama", not secrets worth scrubbing from text.
_MIN_SECRET_LENGTH = 8
_REDACTED = "[redacted]"
_MAX_DETAIL = 500

_CONTEXT_WORDING = re.compile(
    r"context[ _-]?(length|window|size)|maximum context|prompt is too long|too many (input )?tokens"
    r"|reduce the length|exceeds? (the )?(available )?context|input is too long",
    re.IGNORECASE,
)
_POLICY_WORDING = re.compile(
    r"content[ _-]?(policy|filter|management)|safety system|responsible ?ai|moderation"
    r"|flagged|refus",
    re.IGNORECASE,
)


class _ProviderFailure:
    """Where a provider failure came from; mixed into each class below so handlers can log it.

    ``status_code`` is None when no HTTP answer arrived (timeouts, dropped connections);
    ``asked_wait_s`` is the wait the provider asked for when it asked for one (``retry_after``
    is what is waited: no more than the provider's ``max_wait_s``).
    """

    provider: str = ""
    status_code: int | None = None
    request_id: str | None = None
    asked_wait_s: float | None = None


class RateLimited(_ProviderFailure, ProviderRateLimited):
    """429: the provider wants us to slow down; ``retry_after`` says for how long when it says."""


class ProviderOverloaded(_ProviderFailure, TransientError):
    """529 (Anthropic) or an ``overloaded_error``: the provider is shedding load."""


class ProviderUnavailable(_ProviderFailure, TransientError):
    """500/502/503, other 5xx, 409, or no connection: the provider failed, not our request."""


class ProviderTimeout(_ProviderFailure, TransientError):
    """Our client timeout fired, or the provider said 408/504."""


class MalformedResponse(_ProviderFailure, TransientError):
    """A 200 that is not usable: not JSON, not the expected shape, or an empty answer."""


class ContextTooLong(_ProviderFailure, PermanentError):
    """The prompt does not fit the model's context window (or the request is too large)."""


class AuthenticationFailed(_ProviderFailure, PermanentError):
    """401/403: the key is wrong or lacks access; retrying cannot fix it."""


class BadRequest(_ProviderFailure, PermanentError):
    """Any other 4xx (400/404/422...) or 501: the request itself is wrong for this server."""


class ContentRefused(_ProviderFailure, ContentRefusal):
    """The model or provider refused on content-policy grounds (filter, refusal, 400 wording)."""


class OutputTruncated(_ProviderFailure, PermanentError):
    """The answer hit the output-token limit, so it is cut short; raise the limit instead."""


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP-date).

    Header names are matched case-insensitively. A date in the past gives 0.0; a missing or
    unparseable value gives None.
    """
    if not headers:
        return None
    lowered = {name.lower(): value for name, value in headers.items()}
    milliseconds = _finite_float(lowered.get("retry-after-ms"))
    if milliseconds is not None:
        return max(0.0, milliseconds / 1000.0)
    value = lowered.get("retry-after")
    if value is None:
        return None
    seconds = _finite_float(value)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _finite_float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def cost_usd(prices: Prices, model: str, input_tokens: int, output_tokens: int) -> float:
    """Cost of one call from a USD-per-million-tokens table; 0.0 for a model it does not list.

    Never negative, whatever the counts or the prices say.
    """
    price = prices.get(model)
    if price is None:
        return 0.0
    input_price, output_price = price
    cost = (input_tokens * input_price + output_tokens * output_price) / 1_000_000
    return cost if math.isfinite(cost) and cost > 0 else 0.0


def schema_name(request: ModelRequest) -> str:
    """A name for the output schema that both APIs accept (letters, digits, ``_`` and ``-``)."""
    title = request.output_schema.get("title")
    raw = title if isinstance(title, str) and title else request.task
    return re.sub(r"[^A-Za-z0-9_-]", "_", raw)[:64] or "answer"


def strict_compatible(schema: object) -> bool:
    """Whether OpenAI's strict mode takes ``schema`` as it is: objects closed, all fields required.

    Strict mode refuses other schemas; rewriting them would change what the step accepts, so they
    are sent with ``strict: false`` (a guide the model follows, checked by the gateway).
    """
    if isinstance(schema, list):
        return all(strict_compatible(item) for item in schema)
    if not isinstance(schema, Mapping):
        return True
    properties = schema.get("properties")
    fields = properties if isinstance(properties, Mapping) else {}
    if schema.get("type") == "object" or fields:
        if schema.get("additionalProperties") is not False:
            return False
        if set(schema.get("required") or ()) != set(fields):
            return False
    children = [value for key, value in schema.items() if key != "properties"]
    return all(strict_compatible(child) for child in [*children, *fields.values()])


def system_prompt(request: ModelRequest) -> str:
    """The instruction that makes any chat model answer with schema-valid JSON and nothing else."""
    lines = [
        "You are one step of an automated order pipeline; a program parses your answer.",
        "Answer with a single JSON object only: no prose before or after it, no Markdown fences.",
    ]
    if request.output_schema:
        schema = json.dumps(request.output_schema, indent=2, sort_keys=True, ensure_ascii=False)
        lines.append(f"The JSON must validate against this JSON Schema:\n{schema}")
    return "\n".join(lines)


class _Closable(Protocol):
    def close(self) -> None: ...


_Client = TypeVar("_Client", bound=_Closable)
# Each SDK's ``APIStatusError``: both carry ``status_code`` and ``response.headers``.
_StatusError = TypeVar("_StatusError", bound=Exception)


@dataclass(frozen=True)
class _SdkErrors(Generic[_StatusError]):
    """The exceptions of one SDK that a call can raise (both SDKs name them alike)."""

    status: type[_StatusError]  # an HTTP error answer
    timeout: type[Exception]  # our client timeout fired (a kind of ``connection`` failure)
    connection: type[Exception]  # no answer, or a dropped or truncated one
    invalid_body: type[Exception]  # a 200 whose body is not what the SDK expects


class _SdkProvider(ABC, Generic[_Client, _StatusError]):
    """What both providers share: the SDK client's life, the call and its fallback from structured
    output, the key kept out of text, timing, costs and error translation.

    A provider says only what differs (a template method): how to build its SDK client, the request
    with or without structured output, how to send it, and how to read the answer and its usage.
    """

    name: str
    model: str
    _default_name: ClassVar[str]
    # A 4xx whose text matches this says the server lacks the structured-output feature we sent.
    _structured_wording: ClassVar[re.Pattern[str]]
    _errors: _SdkErrors[_StatusError]
    _answer_kind: ClassVar[str]  # what a usable response body holds, for error messages
    # The answer's headers saying how many requests and tokens are left of the provider's limits.
    _remaining_headers: ClassVar[tuple[str, str]]

    def __init__(
        self,
        model: str,
        api_key: str | None,
        base_url: str | None,
        timeout_s: float,
        prices: Prices = DEFAULT_PRICES,
        *,
        structured_output: bool = True,
        name: str | None = None,
        max_wait_s: float = MAX_PROVIDER_WAIT_S,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.name = self._default_name if name is None else name
        self.model = model
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.prices = dict(prices)
        self.structured_output = structured_output
        self.max_wait_s = max_wait_s
        self.max_response_bytes = max_response_bytes
        self._secret = api_key or ""
        self._client = self._new_client(
            api_key=api_key or NO_KEY_PLACEHOLDER,
            base_url=base_url,
            timeout=timeout_s,
            max_retries=0,
        )

    def __repr__(self) -> str:
        shown = ", ".join(f"{key}={value!r}" for key, value in self._shown().items())
        return f"{type(self).__name__}({shown})"

    def _shown(self) -> dict[str, object]:
        """The settings ``repr`` shows (never the key)."""
        return {"model": self.model, "base_url": self.base_url, "timeout_s": self.timeout_s}

    def close(self) -> None:
        """Release the pooled connections."""
        self._client.close()

    def complete(self, request: ModelRequest) -> ModelResponse:
        system = system_prompt(request)
        started = time.perf_counter()
        errors = self._errors
        failure: AgentForgeError
        cause: BaseException
        while True:  # at most twice: a second pass only after structured output was refused
            structured = self._wants_structured(request)
            try:
                with llm_wire.deadline(self.timeout_s):
                    answer = self._send(self._request(request, system, structured=structured))
                    return self._read(answer, request, system, started)
            except errors.status as err:
                message, error_text = self._error_text(err)
                status_code: int = getattr(err, "status_code")  # noqa: B009 (either SDK's)
                if structured and self._lacks_structured(status_code, error_text):
                    continue
                headers = getattr(err, "response").headers  # noqa: B009
                failure = self._from_status(status_code, headers, message, error_text)
                cause = err
            except errors.timeout as err:
                detail = f"no answer within {self.timeout_s}s"
                failure, cause = self._failure(ProviderTimeout, detail), err
            except errors.connection as err:
                refused = llm_wire.refusal_in(err)
                if refused is not None:  # the wire stopped reading: too large, or not decodable
                    failure, cause = self._failure(MalformedResponse, str(refused)), err
                else:
                    detail = f"connection failed ({_short(err)})"
                    failure, cause = self._failure(ProviderUnavailable, detail), err
            except UnicodeDecodeError as err:
                detail = f"the response body is not UTF-8 text ({_short(err)})"
                failure, cause = self._failure(MalformedResponse, detail), err
            except RecursionError as err:
                detail = "the response body is nested deeper than it can be read"
                failure, cause = self._failure(MalformedResponse, detail), err
            except (errors.invalid_body, json.JSONDecodeError) as err:
                invalid = type(err).__name__
                detail = f"the response body is not a valid {self._answer_kind} ({invalid})"
                failure, cause = self._failure(MalformedResponse, detail), err
            self._raise(failure, cause)

    def _remaining(self, headers: Mapping[str, str]) -> tuple[int | None, int | None]:
        """Requests and tokens left, as the answer's rate-limit headers say (None: not said)."""
        return (
            _header_int(headers, self._remaining_headers[0]),
            _header_int(headers, self._remaining_headers[1]),
        )

    @abstractmethod
    def _new_client(self, **options: Any) -> _Client:
        """The SDK client, from the options both SDKs take alike (key, base URL, timeout, retries)."""

    @abstractmethod
    def _request(self, request: ModelRequest, system: str, *, structured: bool) -> dict[str, Any]:
        """The SDK call's arguments; with ``structured``, asking for output in the request's schema."""

    @abstractmethod
    def _send(self, arguments: dict[str, Any]) -> _Sent:
        """One HTTP request: what the SDK made of the answer, its headers and its JSON."""

    @abstractmethod
    def _error_text(self, err: _StatusError) -> tuple[str, str]:
        """An HTTP error's message, and everything its body said (for matching its wording)."""

    @abstractmethod
    def _answer(self, answer: object, document: Mapping[str, Any]) -> _Answer:
        """What the answer says: its text, usage and model, as sent (checked by :meth:`_read`);
        ``answer`` is what the SDK made of the body, ``document`` the body's JSON as it came.

        Raises our class for an answer that was refused, cut short, or is not an answer at all.
        """

    def _read(
        self, answer: _Sent, request: ModelRequest, system: str, started: float
    ) -> ModelResponse:
        said = self._answer(answer.body, answer.document)
        if not isinstance(said.text, str):
            kind = type(said.text).__name__
            raise self._failure(MalformedResponse, f"the answer's text is a {kind}, not text")
        if not said.text.strip():
            raise self._failure(MalformedResponse, "the model returned an empty answer")
        # A count that is missing (some local servers) or unbelievable is estimated.
        input_tokens = token_count(said.input_tokens) or estimate_tokens(system + request.prompt)
        output_tokens = token_count(said.output_tokens) or estimate_tokens(said.text)
        response = self._response(
            said.text, input_tokens, output_tokens, started, served_model(said.model)
        )
        requests_left, tokens_left = self._remaining(answer.headers)
        return replace(response, remaining_requests=requests_left, remaining_tokens=tokens_left)

    def _wants_structured(self, request: ModelRequest) -> bool:
        return self.structured_output and request.output_schema.get("type") == "object"

    def _lacks_structured(self, status_code: int, error_text: str) -> bool:
        """True when a 4xx says the server lacks structured output; it is not asked for again."""
        if status_code not in (400, 422, 501) or not self._structured_wording.search(error_text):
            return False
        self.structured_output = False
        log.warning(
            "%s %s rejected structured output (HTTP %d); asking for plain JSON from now on",
            self.name,
            self.model,
            status_code,
        )
        return True

    def _scrub(self, text: str) -> str:
        if len(self._secret) >= _MIN_SECRET_LENGTH:
            return text.replace(self._secret, _REDACTED)
        return text

    def _mentions_secret(self, error: BaseException) -> bool:
        if len(self._secret) < _MIN_SECRET_LENGTH:
            return False
        rendered = "".join(traceback.format_exception(error)) + repr(getattr(error, "body", None))
        return self._secret in rendered

    def _raise(self, failure: AgentForgeError, cause: BaseException) -> NoReturn:
        """Raise ``failure`` chained to the SDK error, unless that error's text holds the key.

        Called outside the ``except`` block, so an unchained failure has no ``__context__`` either.
        """
        log.debug("%s %s call failed: %s", self.name, self.model, type(failure).__name__)
        if self._mentions_secret(cause):
            raise failure from None
        raise failure from cause

    def _failure(
        self,
        cls: type[AgentForgeError],
        detail: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> AgentForgeError:
        message = self._scrub(f"{self.name} model {self.model!r}: {detail}")
        if len(message) > _MAX_DETAIL:
            message = message[: _MAX_DETAIL - 1] + "…"
        failure: AgentForgeError
        if issubclass(cls, TransientError):
            failure = cls(message, retry_after=retry_after)
        else:
            failure = cls(message)
        if isinstance(failure, _ProviderFailure):
            failure.provider = self.name
            failure.status_code = status_code
            failure.request_id = request_id
        return failure

    def _from_status(
        self, status_code: int, headers: Mapping[str, str], message: str, error_text: str
    ) -> AgentForgeError:
        """Map an HTTP error to our class; ``error_text`` is everything the body said, for wording."""
        asked = parse_retry_after(headers)
        retry_after = asked
        request_id = headers.get("x-request-id") or headers.get("request-id")
        detail = f"HTTP {status_code}: {message}"
        cls: type[AgentForgeError]
        if status_code == 429:
            cls = RateLimited
        elif status_code == 529 or "overloaded_error" in error_text:
            cls = ProviderOverloaded
        elif status_code in (408, 504):
            cls = ProviderTimeout
        elif status_code == 501:
            cls = BadRequest
        elif status_code >= 500 or status_code == 409:
            cls = ProviderUnavailable
        elif status_code in (401, 403):
            cls = AuthenticationFailed
        elif status_code == 413 or _CONTEXT_WORDING.search(error_text):
            cls = ContextTooLong
        elif _POLICY_WORDING.search(error_text):
            cls = ContentRefused
        else:
            cls = BadRequest
        if asked is not None and asked > self.max_wait_s:
            # Not waited: the attempt fails as rate-limited, after no more than the cap.
            cls, retry_after = RateLimited, self.max_wait_s
            detail = (
                f"asked to wait {asked:.0f} s, more than the {self.max_wait_s:g} s a provider may "
                f"ask for (AGENTFORGE_MAX_PROVIDER_WAIT_SECONDS); {detail}"
            )
        failure = self._failure(
            cls, detail, status_code=status_code, request_id=request_id, retry_after=retry_after
        )
        if isinstance(failure, _ProviderFailure):
            failure.asked_wait_s = asked
        return failure

    def _response(
        self,
        text: str,
        input_tokens: int,
        output_tokens: int,
        started: float,
        served: str | None = None,
    ) -> ModelResponse:
        latency = time.perf_counter() - started
        # The answering model's price when the table knows it, else the requested model's.
        priced = served if served is not None and served in self.prices else self.model
        cost = cost_usd(self.prices, priced, input_tokens, output_tokens)
        log.debug(
            "%s %s (served by %s) answered: %d in / %d out tokens, $%.6f, %.3fs",
            self.name,
            self.model,
            served,
            input_tokens,
            output_tokens,
            cost,
            latency,
        )
        return ModelResponse(
            text=text,
            provider=self.name,
            model=self.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost,
            latency_s=latency,
            served_model=served,
        )


@dataclass(frozen=True)
class _Sent:
    """One HTTP answer: what the SDK made of its body, its headers, and its JSON as it came."""

    body: object
    headers: Mapping[str, str]
    document: Mapping[str, Any]


def _document(content: bytes) -> Mapping[str, Any]:
    """The body's JSON object (the SDK has parsed it already: it is JSON), else empty."""
    try:
        parsed = json.loads(content)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


@dataclass(frozen=True)
class _Answer:
    """What an answer's body says, as the SDK read it: nothing here is checked yet."""

    text: object
    input_tokens: object = None
    output_tokens: object = None
    model: object = None


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    """A header's whole number, None when absent or not a number."""
    value = headers.get(name)
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def _short(error: BaseException) -> str:
    """``ExceptionType: message`` of an error's root cause, for messages about no HTTP answer."""
    root: BaseException = error
    while root.__cause__ is not None:
        root = root.__cause__
    text = str(root) or type(root).__name__
    return f"{type(root).__name__}: {text}"

"""The wire under both SDKs: a provider's answer is read with a size cap and a total deadline.

httpx2 (the HTTP client under both SDKs) bounds each read by the timeout, not the whole answer:
a server that drips a byte a second is read for as long as it drips, and a 30 MB body is read
whole before anything looks at it. Both SDKs take an ``http_client``; the one built here has a
response event hook that runs once the headers are in, before a byte of the body is read:

* a ``Content-Length`` over the cap is refused at once (the body is never read);
* the body's byte stream is replaced by one that counts what it yields, decoded (gzip and
  deflate are decoded here, under the same cap, so a small compressed bomb cannot expand in
  memory; any other content coding is refused), and stops at the cap: the rest is not read;
* every chunk is checked against the call's deadline, set by the caller around the call
  (:func:`deadline`), so a drip ends as a timeout at most one read after it.

Refusals are raised as httpx2 errors, which is what the SDKs expect from their client: the SDKs
wrap them as a connection error (:class:`AnswerRefused`) or a timeout (:class:`AnswerPastDeadline`),
with the original as ``__cause__``, where the provider finds it (:func:`refusal_in`).
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2

# Only the codings decoded here under the cap are asked for.
ACCEPT_ENCODING = "gzip, deflate"
_DECODED = {"gzip", "x-gzip", "deflate"}
_local = threading.local()


class AnswerRefused(httpx2.DecodingError):
    """The answer was not read: too large, or in a content coding that is not decoded here."""


class AnswerPastDeadline(httpx2.ReadTimeout):
    """The answer was still arriving when the call's deadline passed (a drip)."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Calls made by this thread inside the block must be answered within ``seconds`` in total."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = previous


def bounded_client(
    client_class: type[httpx2.Client], *, max_bytes: int, **options: Any
) -> httpx2.Client:
    """``client_class`` (an SDK's ``DefaultHttpxClient``) reading answers of ``max_bytes`` at most."""
    headers = {**options.pop("headers", {}), "Accept-Encoding": ACCEPT_ENCODING}
    return client_class(
        headers=headers,
        event_hooks={"response": [lambda response: _bound(response, max_bytes)]},
        **options,
    )


def refusal_in(error: BaseException) -> AnswerRefused | None:
    """The wire's refusal behind an SDK error, if that is what it was."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, AnswerRefused):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _bound(response: httpx2.Response, max_bytes: int) -> None:
    """The response hook: refuse what the headers already show, bound the body's stream."""
    request = response.request
    ends = getattr(_local, "deadline", None)
    if ends is not None and time.monotonic() > ends:
        raise AnswerPastDeadline("the answer's headers came after the deadline", request=request)
    length = response.headers.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) > max_bytes:
        raise AnswerRefused(
            f"the answer is {int(length)} bytes (Content-Length), more than the {max_bytes} "
            "bytes an answer may have",
            request=request,
        )
    codings = [c.strip().lower() for c in response.headers.get("content-encoding", "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if len(codings) > 1 or (codings and codings[0] not in _DECODED):
        raise AnswerRefused(
            f"the answer's content coding {', '.join(codings)!r} is not one asked for",
            request=request,
        )
    if codings:
        del response.headers["content-encoding"]  # decoded below, under the cap
    # The stream the transport gave is a SyncByteStream; ours reads it and counts.
    response.stream = _BoundedStream(
        response.stream,  # type: ignore[arg-type]
        max_bytes=max_bytes,
        ends=ends,
        decoder=zlib.decompressobj(zlib.MAX_WBITS | 32) if codings else None,
        request=request,
    )


class _BoundedStream(httpx2.SyncByteStream):
    def __init__(
        self,
        inner: httpx2.SyncByteStream,
        *,
        max_bytes: int,
        ends: float | None,
        decoder: Any,
        request: httpx2.Request,
    ) -> None:
        self._inner, self._max, self._ends = inner, max_bytes, ends
        self._decoder, self._request = decoder, request

    def __iter__(self) -> Iterator[bytes]:
        size = 0
        for raw in self._inner:
            if self._ends is not None and time.monotonic() > self._ends:
                self.close()
                raise AnswerPastDeadline(
                    f"the answer was still arriving at the deadline ({size} bytes read)",
                    request=self._request,
                )
            chunk = raw
            if self._decoder is not None:
                try:
                    chunk = self._decoder.decompress(raw, self._max - size + 1)
                except zlib.error as exc:
                    self.close()
                    raise AnswerRefused(
                        f"the answer is not valid compressed data ({exc})", request=self._request
                    ) from None
                if self._decoder.unconsumed_tail:
                    size = self._max + 1  # more is waiting than the cap leaves room for
            size += len(chunk)
            if size > self._max:
                self.close()
                raise AnswerRefused(
                    f"the answer is more than the {self._max} bytes an answer may have "
                    "(the rest was not read)",
                    request=self._request,
                )
            if chunk:
                yield chunk

    def close(self) -> None:
        self._inner.close()

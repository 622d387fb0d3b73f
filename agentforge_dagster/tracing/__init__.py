"""OpenTelemetry traces of orders: one trace per order, across every process that touches it.

On when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (and not
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``), configured by the SDK's standard
variables; off otherwise, and then this module imports nothing of OpenTelemetry and every call
here returns at once. The exporting half lives in :mod:`.otel`, imported on first use, in each
process after any fork (the forkserver preloads this code; a provider made at import would put
its export thread there).

What the spans are and what they carry: ``docs/traces.md``. The ids: :mod:`.ids`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from agentforge_dagster.tracing.ids import OrderTrace, parse_traceparent, run_span_id

if TYPE_CHECKING:
    from agentforge_dagster.tracing.otel import Backend

__all__ = [
    "OrderTrace",
    "SpanHandle",
    "capture_content",
    "emit",
    "enabled",
    "flush",
    "link",
    "parse_traceparent",
    "run_span_id",
    "span",
]

Attributes = Mapping[str, Any]
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def enabled() -> bool:
    """Whether this process exports traces (read each time: tests and the CLI change it)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(os.environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def link(template: str | None, trace_id: str) -> str | None:
    """A trace viewer's page of one trace (``AGENTFORGE_TRACE_URL``, ``{trace_id}`` in it)."""
    return template.replace("{trace_id}", trace_id) if template else None


def capture_content() -> bool:
    """Prompt and completion text go into model spans only when this standard switch says so."""
    flag = os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
    return flag.strip().lower() == "true"


class SpanHandle(Protocol):
    """What the code inside a span may tell it."""

    def set(self, key: str, value: Any) -> None: ...

    def fail(self, error_type: str, message: str = "") -> None: ...


class _NoSpan:
    def set(self, key: str, value: Any) -> None:
        return None

    def fail(self, error_type: str, message: str = "") -> None:
        return None


NO_SPAN: SpanHandle = _NoSpan()


def _backend() -> Backend:
    from agentforge_dagster.tracing.otel import backend

    return backend()


@contextmanager
def span(
    name: str,
    trace: OrderTrace,
    *,
    parent: int | None = None,
    span_id: int | None = None,
    kind: str = "internal",
    label: str = "CHAIN",
    attributes: Attributes | None = None,
) -> Iterator[SpanHandle]:
    """A span around a block, in ``trace``, under ``parent`` (a span id; the root if None).

    The block's exception ends the span as an error (with ``error.type``) and goes on. Spans
    opened inside the block, in this thread, are its children (a step's model calls).
    """
    if not enabled():
        yield NO_SPAN
        return
    with _backend().span(
        name,
        trace,
        parent=parent,
        span_id=span_id,
        kind=kind,
        label=label,
        attributes=attributes or {},
    ) as handle:
        yield handle


def emit(
    name: str,
    trace: OrderTrace,
    *,
    start: datetime | None,
    end: datetime | None = None,
    parent: int | None = None,
    span_id: int | None = None,
    kind: str = "internal",
    label: str | None = "CHAIN",
    attributes: Attributes | None = None,
    error_type: str | None = None,
    links: Sequence[str] = (),
) -> None:
    """A span that already happened, from ``start`` to ``end`` (now if None); ``parent`` None is
    the current span of this thread if there is one in ``trace``, else the order's root.

    ``links`` are W3C ``traceparent`` headers of spans elsewhere (a broker message's sender)."""
    if not enabled():
        return
    _backend().emit(
        name,
        trace,
        start=start,
        end=end,
        parent=parent,
        span_id=span_id,
        kind=kind,
        label=label,
        attributes=attributes or {},
        error_type=error_type,
        links=links,
    )


def flush() -> None:
    """Export what this process holds, waiting at most a second (less if the collector is
    failing): the end of every step and every failure path calls it, since a forked run worker
    ends with ``os._exit`` and never runs the exporter's own shutdown."""
    if enabled():
        _backend().flush()

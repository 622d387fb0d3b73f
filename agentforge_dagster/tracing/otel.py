"""The exporting half of :mod:`agentforge_dagster.tracing`: imported only when tracing is on.

One tracer provider per process, made on first use and again in a forked child (never in the
forkserver, which only preloads code). It is this project's own provider, not the global one:
nothing else in the process starts tracing because we do (the Anthropic SDK traces itself once a
global provider exists, which would count each call twice). Everything the SDK's standard
variables configure stays theirs: the endpoint, headers, protocol (``http/protobuf``, the
default, or ``grpc``), compression, resource attributes, ``OTEL_SERVICE_NAME`` and the sampler.
Two defaults differ: the exporter's timeout is 2 s unless ``OTEL_EXPORTER_OTLP_TIMEOUT`` (or its
traces form) says otherwise, and ``service.name`` and Phoenix's ``openinference.project.name``
are ``agentforge`` unless set.

Span ids the trace derives (an order's root, a run) are handed to the SDK through an id generator
that takes the next id from a context variable; every other span gets a random one.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
    SpanProcessor,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from agentforge_dagster.tracing.ids import OrderTrace, parse_traceparent

logger = logging.getLogger(__name__)

FLUSH_WAIT_S = 1.0
# After a failed export, flushes wait only this long for a while: a collector that is down
# costs a step next to nothing.
FLUSH_WAIT_WHEN_FAILING_S = 0.05
FAILING_FOR_S = 30.0
DEFAULT_TIMEOUT_S = 2.0
TRACER_NAME = "agentforge_dagster"
_KINDS = {
    "internal": SpanKind.INTERNAL,
    "client": SpanKind.CLIENT,
    "server": SpanKind.SERVER,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
}

_next_trace_id: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "agentforge_next_trace_id", default=None
)
_next_span_id: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "agentforge_next_span_id", default=None
)


class DerivedIds(RandomIdGenerator):
    """Random ids, except the next one a caller derived (see the module docstring)."""

    def generate_span_id(self) -> int:
        derived = _next_span_id.get()
        return derived if derived is not None else super().generate_span_id()

    def generate_trace_id(self) -> int:
        derived = _next_trace_id.get()
        return derived if derived is not None else super().generate_trace_id()

    def is_trace_id_random(self) -> bool:
        return False  # derived from a hash: uniform, but not what the W3C random flag promises


class WatchedExporter(SpanExporter):
    """The configured exporter, remembering when it last failed: for ``FAILING_FOR_S`` after a
    failed export, batches are dropped without a try and flushes do not wait, so a collector
    that is down costs a step (and a process's exit) next to nothing."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.failed_at: float | None = None
        self.exported = 0
        self.dropped = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.failing():  # the collector is down: drop the batch at once, try again later
            self.dropped += len(spans)
            return SpanExportResult.FAILURE
        try:
            result = self.inner.export(spans)
        except Exception:  # an exporter must not break the step it reports on
            logger.warning("trace export failed", exc_info=True)
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.failed_at = None
            self.exported += len(spans)
        else:
            self.failed_at = time.monotonic()
        return result

    def failing(self) -> bool:
        return self.failed_at is not None and time.monotonic() - self.failed_at < FAILING_FOR_S

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _timeout() -> float | None:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        if os.environ.get(name, "").strip():
            return None  # the operator's, read by the exporter itself
    return DEFAULT_TIMEOUT_S


def _exporter() -> SpanExporter:
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "").strip()
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
        or "http/protobuf"
    ).lower()
    timeout = _timeout()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(timeout=timeout)
    if protocol not in ("http/protobuf", "http"):
        logger.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported: http/protobuf", protocol)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(timeout=timeout)


def _resource() -> Resource:
    attributes = dict(Resource.create().attributes)
    if str(attributes.get("service.name", "unknown_service")).startswith("unknown_service"):
        attributes["service.name"] = "agentforge"
    attributes.setdefault("openinference.project.name", "agentforge")
    return Resource.create(attributes)


def _value(value: Any) -> Any:
    """An attribute value OpenTelemetry takes (str, bool, int, float or a list of one of them)."""
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, list | tuple) and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        return list(value)
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _value(value) for key, value in attributes.items() if value is not None}


def _ns(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1e9)


class _Handle:
    def __init__(self, span: otel_trace.Span) -> None:
        self._span = span
        self.failed = False

    def set(self, key: str, value: Any) -> None:
        if value is not None:
            self._span.set_attribute(key, _value(value))

    def fail(self, error_type: str, message: str = "") -> None:
        self.failed = True
        self._span.set_attribute("error.type", error_type)
        self._span.set_status(Status(StatusCode.ERROR, message[:500] or error_type))


class Backend:
    """This process's provider, tracer and exporter."""

    def __init__(self, exporter: SpanExporter | None = None, *, batch: bool = True) -> None:
        self.pid = os.getpid()
        self.exporter = WatchedExporter(exporter or _exporter())
        self.provider = TracerProvider(resource=_resource(), id_generator=DerivedIds())
        processor: SpanProcessor = (
            BatchSpanProcessor(self.exporter) if batch else SimpleSpanProcessor(self.exporter)
        )
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer(TRACER_NAME)

    def _parent(self, trace: OrderTrace, parent: int | None) -> otel_context.Context:
        """The context a span of ``trace`` starts in: under ``parent``, or under the span
        current in this thread if it is of this trace, or under the order's root."""
        if parent is None:
            current = otel_trace.get_current_span().get_span_context()
            if current.is_valid and current.trace_id == trace.trace_id:
                return otel_context.get_current()
            parent = trace.root_span_id
        sampled = self.provider.sampler.should_sample(
            None, trace.trace_id, "order"
        ).decision.is_sampled()
        remote = SpanContext(
            trace.trace_id,
            parent,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
        )
        return otel_trace.set_span_in_context(otel_trace.NonRecordingSpan(remote))

    def _start(
        self,
        name: str,
        trace: OrderTrace,
        *,
        parent: int | None,
        span_id: int | None,
        kind: str,
        label: str | None,
        attributes: Mapping[str, Any],
        start: int | None = None,
        links: Sequence[str] = (),
    ) -> otel_trace.Span:
        is_root = span_id is not None and span_id == trace.root_span_id
        # A root has no parent, even when emitted inside another span of this thread (the invoice
        # step's span, when the order completes): an empty context, not the current one.
        context = otel_context.Context() if is_root else self._parent(trace, parent)
        span_links = []
        for header in links:
            parsed = parse_traceparent(header)
            if parsed is not None:
                trace_id, linked_span, sampled = parsed
                flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
                span_links.append(
                    Link(SpanContext(trace_id, linked_span, is_remote=True, trace_flags=flags))
                )
        trace_token = _next_trace_id.set(trace.trace_id if is_root else None)
        span_token = _next_span_id.set(span_id)
        try:
            return self.tracer.start_span(
                name,
                context=context,
                kind=_KINDS.get(kind, SpanKind.INTERNAL),
                attributes={
                    **({"openinference.span.kind": label} if label else {}),
                    "agentforge.order_id": trace.order_id,
                    **_attributes(attributes),
                },
                links=span_links,
                start_time=start,
                record_exception=False,
                set_status_on_exception=False,
            )
        finally:
            _next_span_id.reset(span_token)
            _next_trace_id.reset(trace_token)

    @contextmanager
    def span(
        self,
        name: str,
        trace: OrderTrace,
        *,
        parent: int | None,
        span_id: int | None,
        kind: str,
        label: str,
        attributes: Mapping[str, Any],
    ) -> Iterator[_Handle]:
        started = self._start(
            name,
            trace,
            parent=parent,
            span_id=span_id,
            kind=kind,
            label=label,
            attributes=attributes,
        )
        handle = _Handle(started)
        token = otel_context.attach(otel_trace.set_span_in_context(started))
        try:
            yield handle
        except BaseException as exc:
            if not handle.failed:
                handle.fail(getattr(exc, "error_class", None) or type(exc).__name__, str(exc))
            raise
        finally:
            otel_context.detach(token)
            started.end()

    def emit(
        self,
        name: str,
        trace: OrderTrace,
        *,
        start: datetime | None,
        end: datetime | None,
        parent: int | None,
        span_id: int | None,
        kind: str,
        label: str | None,
        attributes: Mapping[str, Any],
        error_type: str | None,
        links: Sequence[str],
    ) -> None:
        made = self._start(
            name,
            trace,
            parent=parent,
            span_id=span_id,
            kind=kind,
            label=label,
            attributes=attributes,
            start=_ns(start),
            links=links,
        )
        if error_type:
            _Handle(made).fail(error_type)
        made.end(end_time=_ns(end))

    def flush(self) -> None:
        wait = FLUSH_WAIT_WHEN_FAILING_S if self.exporter.failing() else FLUSH_WAIT_S
        flusher = threading.Thread(
            target=self.provider.force_flush, name="agentforge-trace-flush", daemon=True
        )
        flusher.start()
        flusher.join(wait)


_backend: Backend | None = None
_lock = threading.Lock()


def backend() -> Backend:
    """This process's backend, made on first use (and anew in a forked child)."""
    global _backend
    current = _backend
    if current is not None and current.pid == os.getpid():
        return current
    with _lock:
        if _backend is None or _backend.pid != os.getpid():
            _backend = Backend()
        return _backend


def use(made: Backend | None) -> None:
    """Tests: this backend (an in-memory exporter's) instead of the configured one; None resets."""
    global _backend
    _backend = made

"""Tracing on, into memory: the ``spans`` fixture, and reading the tree it caught."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentforge_dagster.tracing import otel


class Caught:
    """The spans exported so far, and a few ways to look at them."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.all() if span.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, f"{len(found)} spans named {name!r}: {self.names()}"
        return found[0]

    def names(self) -> list[str]:
        return [span.name for span in self.all()]

    def parent_of(self, span: ReadableSpan) -> ReadableSpan | None:
        if span.parent is None:
            return None
        for other in self.all():
            if other.context.span_id == span.parent.span_id:
                return other
        return None


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[Caught]:
    """Tracing on (an endpoint set, nothing listening: the exporter is the in-memory one)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    exporter = InMemorySpanExporter()
    otel.use(otel.Backend(exporter, batch=False))
    yield Caught(exporter)
    otel.use(None)

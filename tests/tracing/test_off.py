"""Tracing off costs nothing: not even the import of OpenTelemetry."""

from __future__ import annotations

import os
import subprocess
import sys


def test_with_no_endpoint_nothing_of_opentelemetry_is_imported() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    code = (
        "import sys\n"
        "from agentforge_dagster import tracing\n"
        "from agentforge_dagster.persistence.store import BusinessStore\n"
        "t = tracing.OrderTrace('d', 'o')\n"
        "with tracing.span('step plan', t) as s: s.set('x', 1)\n"
        "tracing.emit('queued', t, start=None)\n"
        "tracing.flush()\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_the_standard_switches_turn_it_off_even_with_an_endpoint() -> None:
    from agentforge_dagster import tracing

    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    cases = {
        "on": ({}, True),
        "sdk disabled": ({"OTEL_SDK_DISABLED": "true"}, False),
        "exporter none": ({"OTEL_TRACES_EXPORTER": "none"}, False),
        "traces endpoint only": (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x"},
            True,
        ),
        "blank": ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
    }
    saved = dict(os.environ)
    try:
        for name, (extra, expected) in cases.items():
            for key in [k for k in os.environ if k.startswith("OTEL_")]:
                del os.environ[key]
            os.environ.update({**base, **extra})
            assert tracing.enabled() is expected, name
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_a_collector_that_is_down_is_not_asked_again_for_a_while() -> None:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from agentforge_dagster.tracing.otel import WatchedExporter

    class Down(SpanExporter):
        calls = 0

        def export(self, spans):  # type: ignore[no-untyped-def]
            Down.calls += 1
            return SpanExportResult.FAILURE

    watched = WatchedExporter(Down())
    assert watched.export([]) is SpanExportResult.FAILURE
    dropped = [object(), object()]  # never looked at: dropped unread
    assert watched.export(dropped) is SpanExportResult.FAILURE  # type: ignore[arg-type]
    assert watched.dropped == 2
    assert Down.calls == 1 and watched.failing()
    watched.failed_at = -1e9  # long ago: it is tried again
    watched.export([])
    assert Down.calls == 2

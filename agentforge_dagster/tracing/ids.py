"""The ids of an order's trace, derived: every process finds the same trace without a lookup.

A trace id is 16 bytes and a span id 8, neither all zero (W3C Trace Context). Both are the first
bytes of a SHA-256 over a label, the deployment's id and the order's, so two deployments' order
``ord-1`` never share a trace, and the CLI that took an order, the sensor that launched its run,
the run worker in its container and the person who approved its hold all parent their spans on
the same root without asking anyone. Langfuse's ``create_trace_id(seed=…)`` is the same idea.

An order's root span covers one *episode*: from its intake (or the replay that started the
episode) to the final state the episode reached. A replay after a final state starts the next
episode: a new root span id in the same trace, so nothing is emitted twice under one id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["OrderTrace", "parse_traceparent", "run_span_id", "traceparent"]


def _derived(size: int, *parts: str) -> int:
    digest = hashlib.sha256("\x1f".join(("agentforge-trace", *parts)).encode()).digest()
    value = int.from_bytes(digest[:size], "big")
    return value or 1  # an all-zero id is invalid; a SHA-256 prefix of zeros is all but impossible


@dataclass(frozen=True)
class OrderTrace:
    """Where an order's spans go: its trace, and the root span of its current episode."""

    deployment: str
    order_id: str
    episode: int = 0

    @property
    def trace_id(self) -> int:
        return _derived(16, "trace", self.deployment, self.order_id)

    @property
    def root_span_id(self) -> int:
        return _derived(8, "root", self.deployment, self.order_id, str(self.episode))

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"

    def run_span_id(self, run_id: str) -> int:
        """The span of one Dagster run of the order (its steps parent on it, in any process)."""
        return run_span_id(self.deployment, run_id)

    def traceparent(self) -> str:
        """The W3C ``traceparent`` of the order's root span, for a consumer to continue."""
        return traceparent(self.trace_id, self.root_span_id)


def run_span_id(deployment: str, run_id: str) -> int:
    return _derived(8, "run", deployment, run_id)


def traceparent(trace_id: int, span_id: int, *, sampled: bool = True) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def parse_traceparent(header: str | None) -> tuple[int, int, bool] | None:
    """(trace id, span id, sampled) of a W3C ``traceparent``; None if absent or malformed."""
    if not header or not isinstance(header, str) or len(header) > 128:
        return None
    parts = header.strip().split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff":
        return None
    version, trace_hex, span_hex, flags = parts[:4]
    if len(trace_hex) != 32 or len(span_hex) != 16 or len(flags) != 2:
        return None
    if version == "00" and len(parts) != 4:
        return None
    try:
        trace_id, span_id, bits = int(trace_hex, 16), int(span_hex, 16), int(flags, 16)
        int(version, 16)
    except ValueError:
        return None
    if not trace_id or not span_id or trace_hex != trace_hex.lower():
        return None
    return trace_id, span_id, bool(bits & 1)

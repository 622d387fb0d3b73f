"""The machine's brokers as fixtures for the broker tests (tests/brokers.py), and each broker's
side of the contract tests (``broker``: RabbitMQ and Redis Streams in turn)."""

from __future__ import annotations

import pytest

from tests.brokers import own_redis, rabbit_url, redis_url
from tests.orchestration.brokers.helpers import (
    BrokerUnderTest,
    rabbitmq_under_test,
    redis_under_test,
)

__all__ = ["own_redis", "rabbit_url", "redis_url"]  # fixtures


@pytest.fixture(params=["rabbitmq", "redis"])
def broker(request: pytest.FixtureRequest) -> BrokerUnderTest:
    """Each broker in turn, in a corner of its own (a vhost, a database), through its kind."""
    if request.param == "rabbitmq":
        return rabbitmq_under_test(request.getfixturevalue("rabbit_url"))
    return redis_under_test(request.getfixturevalue("redis_url"))

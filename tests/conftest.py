"""Shared fixtures: every test gets its own business database, folders and Dagster instance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, Definitions, instance_for_test

from agentforge_dagster.definitions import build_definitions
from agentforge_dagster.domain.models import Order, parse_order
from agentforge_dagster.persistence.store import BusinessStore
from agentforge_dagster.settings import AgentForgeSettings


@pytest.fixture
def settings(tmp_path: Path) -> AgentForgeSettings:
    return AgentForgeSettings(home=tmp_path / "agentforge", dagster_home=tmp_path / "dagster_home")


@pytest.fixture
def store(settings: AgentForgeSettings) -> Iterator[BusinessStore]:
    business = BusinessStore.from_url(settings.resolved_database_url())
    business.create_schema()
    yield business
    business.engine.dispose()


@pytest.fixture
def defs(settings: AgentForgeSettings) -> Definitions:
    return build_definitions(settings)


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as dagster_instance:
        yield dagster_instance


def make_order(index: int = 0, **overrides: object) -> Order:
    fields: dict[str, object] = {
        "customer": f"customer-{index}",
        "service": "blog_post",
        "brief": f"Write about reliable pipelines for small shops, part {index}",
        "price": "150.00",
        **overrides,
    }
    return parse_order(fields)

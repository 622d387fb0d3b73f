"""A process imports only what it uses: every run worker pays for each import again (bench/suite.py).

Measured under the daemon (bench/RESULTS.md): importing the Anthropic SDK cost a run worker about a
quarter of its CPU when its model chain named OpenAI only. Each check runs in a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("pandas", "boto3", "dagster_aws", "openai", "anthropic", "pika", "redis", "docker")


def imported_after(code: str) -> set[str]:
    """The heavy top-level packages a fresh interpreter holds after running ``code``."""
    probe = code + f"\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return set(done.stdout.split())


def test_the_definitions_of_the_embedded_default_import_none_of_the_heavy_clients() -> None:
    assert (
        imported_after(
            "from agentforge_dagster.definitions import build_definitions\n"
            "from agentforge_dagster.settings import AgentForgeSettings\n"
            "build_definitions(AgentForgeSettings())"
        )
        == set()
    )


def test_a_chain_of_openai_models_imports_the_openai_sdk_only() -> None:
    provider = (
        "from agentforge_dagster.execution.resources import ModelResource, ModelSpec\n"
        "resource = ModelResource(openai_api_key='k', anthropic_api_key='k')\n"
        "resource._provider(ModelSpec({kind!r}, 'm', 'http://127.0.0.1:9/v1'))"
    )
    assert imported_after(provider.format(kind="openai")) == {"openai"}
    assert imported_after(provider.format(kind="anthropic")) == {"anthropic"}

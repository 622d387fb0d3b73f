"""Which class answers for each kind of model provider a chain names (``provider:model[@url]``).

Named, not imported: a run imports the SDK of the providers its chain uses and no other (the
Anthropic SDK alone cost a run worker a quarter of its CPU). No provider module imports this one.
"""

from __future__ import annotations

import importlib

# kind → (module, class); every class follows :class:`~.base.ModelProvider`.
PROVIDERS: dict[str, tuple[str, str]] = {
    "offline": ("agentforge_dagster.execution.llm.offline", "OfflineModel"),
    "openai": ("agentforge_dagster.execution.llm.openai", "OpenAICompatibleProvider"),
    "anthropic": ("agentforge_dagster.execution.llm.anthropic", "AnthropicProvider"),
}


def provider_class(kind: str) -> type:
    """The class of a provider kind, its module (and SDK) imported now."""
    try:
        module, name = PROVIDERS[kind]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise ValueError(f"unknown model provider {kind!r} (known: {known})") from None
    cls = getattr(importlib.import_module(module), name)
    assert isinstance(cls, type)
    return cls


def sdk_module(kind: str) -> str:
    """The module a provider kind lives in (what a forkserver preloads for it)."""
    return PROVIDERS[kind][0]

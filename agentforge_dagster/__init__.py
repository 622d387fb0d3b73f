"""AgentForge on Dagster: the production pipeline of an AI-run business.

Layers: ``domain`` (pure models and rules), ``execution`` (business steps and model providers),
``orchestration`` (jobs, retries, runs), ``persistence`` (business store, artifacts, audit) and
``metrics`` (reliability and business figures).
"""

__version__ = "0.1.0"

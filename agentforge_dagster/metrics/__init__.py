"""Reliability figures from Dagster's run records and event log, business figures from the store."""

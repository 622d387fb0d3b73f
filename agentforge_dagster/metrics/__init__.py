"""Reliability and business figures as pandas DataFrames, computed from the audit trail."""

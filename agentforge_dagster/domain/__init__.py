"""Business vocabulary with no Dagster in it: orders, artifacts, errors, the order state machine."""

"""Business steps (plain functions and the assets that run them), model providers, fault injection."""

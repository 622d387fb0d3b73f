"""Business store (SQLAlchemy Core), artifact IO managers and the tamper-evident audit trail."""

"""Which brokers there are, what the definitions and the CLI know of each, and where each lives.

Named, not imported: a :class:`~.base.BrokerKind` holds what a sensor, an asset or ``agentforge broker
status`` needs before any connection (its name, its URL setting, its descriptions), and
:meth:`~.base.BrokerKind.open` imports the broker's module, and with it its client library, only when
there is a broker to talk to. No broker module imports this one.
"""

from __future__ import annotations

from agentforge_dagster.orchestration.brokers.base import BrokerKind

RABBITMQ = BrokerKind(
    name="rabbitmq",
    url_variable="AGENTFORGE_RABBITMQ_URL",
    url=lambda settings: settings.brokers.resolved_rabbitmq_url(),
    module="agentforge_dagster.orchestration.brokers.rabbitmq",
    class_name="RabbitMQ",
    intake_description="Queue orders from the RabbitMQ intake queue (AGENTFORGE_RABBITMQ_URL); "
    "each message acknowledged after its order or refusal is committed.",
    asset_description="Orders taken from the RabbitMQ intake queue (observed each intake tick).",
)
REDIS = BrokerKind(
    name="redis",
    url_variable="AGENTFORGE_REDIS_URL",
    url=lambda settings: settings.brokers.resolved_redis_url(),
    module="agentforge_dagster.orchestration.brokers.redis_streams",
    class_name="RedisStreams",
    intake_description="Queue orders from the Redis intake stream's consumer group "
    "(AGENTFORGE_REDIS_URL); each entry acknowledged after its order or refusal is committed.",
    asset_description="Orders taken from the Redis intake stream (observed each intake tick).",
)
# In the order the sensors, assets, figures and events go.
BROKERS: tuple[BrokerKind, ...] = (RABBITMQ, REDIS)

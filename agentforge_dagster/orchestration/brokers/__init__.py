"""Orders from message brokers, order events back out: one protocol, one module per broker.

What a broker is (:mod:`.base`: the :class:`~.base.Broker` protocol), RabbitMQ (:mod:`.rabbitmq`)
and Redis Streams (:mod:`.redis_streams`), which broker lives where (:mod:`.registry`), and what is
written once against the protocol: the intake (:mod:`.intake`), the outbox relay (:mod:`.relay`),
``agentforge broker status`` (:mod:`.status`) and the sensors (:mod:`.sensors`). Importing this
package, the registry or the status imports no broker client (pika, redis-py): a broker's module
is imported by a tick that has that broker to talk to.

Intake (the ``rabbitmq_intake`` and ``redis_intake`` sensors, next to ``order_queue``): a bounded
batch a tick, each message parsed and validated exactly as ``agentforge submit --file`` does, and
**acknowledged only after** its order or its refusal is committed to the business store. A crash
between the commit and the acknowledgement leaves the message unacknowledged: the broker delivers
it again, and the redelivery changes nothing (the order is there already; a refusal is recorded
once per message, by its key).

The contract with publishers: a message carries an ``order_id`` field in its JSON body or a broker
message id (RabbitMQ's ``message_id`` property; a Redis stream entry's id is always there), and the
order id is that. A RabbitMQ message with neither is refused and dead-lettered with that reason:
two genuine orders are never merged by hashing their bodies. A message that is not an order —
bad JSON, a missing field, a hostile value — is recorded in ``rejected_orders`` with its reasons
and moved to the broker's dead-letter place (RabbitMQ: the queue's dead-letter exchange, bound to
``<queue>.rejected``; Redis: the ``<stream>:rejected`` stream), so it never blocks the queue.

Events (the ``order_events_outbox`` sensor): the outbox rows that the order state machine writes in
the transaction of each change (:mod:`~agentforge_dagster.persistence.outbox`) are published to
the events exchange (topic, routing key ``order.<state>``) and/or the events stream, and marked
sent to a broker only after it confirmed them (publisher confirms on RabbitMQ, the ``XADD`` reply
on Redis). A broker that is down leaves the events pending; they go out when it is back.
"""

"""A group member that dies between the two rounds of a cooperative
rebalance: a plain confluent-kafka consumer, static (group.instance.id),
cooperative-sticky, that exits the moment the group asks it to give
partitions up, before it can join the second round.

    python dies_on_revoke.py BOOTSTRAP GROUP TOPIC INSTANCE_ID

Prints "assigned N" when it holds N partitions, "revoked N" before it dies.
Its session (30 s) outlasts the test's next step: the member is still in
the group when a worker comes back under the same instance id.
"""
import os
import sys

from confluent_kafka import Consumer

bootstrap, group, topic, instance = sys.argv[1:5]
consumer = Consumer(
    {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "group.instance.id": instance,
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 30000,
        "enable.auto.commit": False,
    }
)


def assigned(_consumer, partitions):
    print("assigned", len(partitions), flush=True)


def revoked(_consumer, partitions):
    print("revoked", len(partitions), flush=True)
    os._exit(0)


consumer.subscribe([topic], on_assign=assigned, on_revoke=revoked)
while True:
    consumer.poll(0.1)

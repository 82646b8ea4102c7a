"""A group member that joins and leaves over and over: a plain
confluent-kafka consumer (cooperative-sticky, dynamic membership, commits
nothing) that subscribes, holds what the group gives it for a moment, and
closes (a LeaveGroup) HOLD_SECONDS after the group gave it partitions
(or after 20 s without). Each join and each leave makes the group
rebalance, so the workers in it take many rebalances while they work.

    python flapping_member.py BOOTSTRAP GROUP TOPIC ROUNDS HOLD_SECONDS

Prints "round N: held P partitions" after each leave.
"""
import sys
import time

from confluent_kafka import Consumer

bootstrap, group, topic = sys.argv[1:4]
rounds, hold = int(sys.argv[4]), float(sys.argv[5])
for n in range(rounds):
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.commit": False,
        }
    )
    held = []

    def assigned(_consumer, partitions, held=held):
        held.extend(partitions)

    consumer.subscribe([topic], on_assign=assigned)
    until = time.monotonic() + 20
    while not held and time.monotonic() < until:
        consumer.poll(0.05)
    until = time.monotonic() + hold
    while time.monotonic() < until:
        consumer.poll(0.05)
    consumer.close()
    print(f"round {n}: held {len(held)} partitions", flush=True)

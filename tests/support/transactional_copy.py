"""Copies a topic's records into another topic of as many partitions, each
to its own partition, with a transactional producer: committed transactions
of BATCH records, and an aborted transaction of junk records after every
third one, so the copy's log has gaps (commit markers, aborted records)
where the source has none.

    transactional_copy.py BOOTSTRAP SOURCE TARGET BATCH

Prints "copied N aborted M".
"""

import sys

from confluent_kafka import Consumer, Producer, TopicPartition


def main() -> None:
    bootstrap, source, target, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"copy-{target}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    partitions = consumer.list_topics(source, timeout=30).topics[source].partitions
    ends = {p: consumer.get_watermark_offsets(TopicPartition(source, p), timeout=30)[1] for p in partitions}
    consumer.assign([TopicPartition(source, p, 0) for p in partitions])
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": f"copy-{target}", "linger.ms": 5}
    )
    producer.init_transactions(30)
    copied, aborted, in_txn, txns = 0, 0, 0, 0
    done = {p for p, end in ends.items() if end == 0}
    producer.begin_transaction()
    while len(done) < len(ends):
        m = consumer.poll(5)
        if m is None:
            raise SystemExit(f"no record within 5 s; done {sorted(done)} of {sorted(ends)}")
        if m.error():
            if m.error().code() == -191:  # end of partition
                if m.offset() >= ends[m.partition()]:
                    done.add(m.partition())
                continue
            raise SystemExit(str(m.error()))
        producer.produce(
            target,
            key=m.key(),
            value=m.value(),
            partition=m.partition(),
            timestamp=m.timestamp()[1],
            headers=m.headers(),
        )
        copied += 1
        in_txn += 1
        if in_txn >= batch:
            producer.commit_transaction(30)
            txns += 1
            in_txn = 0
            if txns % 3 == 0:
                producer.begin_transaction()
                for p in ends:
                    for i in range(5):
                        producer.produce(target, key=b"junk", value=b"aborted %d" % i, partition=p)
                        aborted += 1
                # Sent before the abort (which drops what is still queued),
                # so the aborted records are in the log.
                producer.flush(30)
                producer.abort_transaction(30)
            producer.begin_transaction()
    producer.commit_transaction(30)
    consumer.close()
    print(f"copied {copied} aborted {aborted}")


if __name__ == "__main__":
    main()

"""Produces orders the way a Python team would: confluent-kafka's Producer
with its AvroSerializer, the schema registered in the registry by the
serializer itself (the registry, not segstream, assigns the id).

    python avro_produce.py BOOTSTRAP REGISTRY_URL TOPIC SCHEMA_FILE COUNT PREFIX EXTRA_FIELD

The schema is ours plus one field a newer upstream version added
(EXTRA_FIELD, an optional string): the worker must read it by resolution;
another EXTRA_FIELD is another schema, with another id. Keys
are customer ids; the partitioner is the one segstream's README asks
librdkafka clients to set. Prints the schema id the records carry.
"""
import json
import sys

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

bootstrap, registry, topic, schema_file, count, prefix, extra = sys.argv[1:8]
schema = json.load(open(schema_file))
schema["fields"].append({"name": extra, "type": ["null", "string"], "default": None})
serializer = AvroSerializer(SchemaRegistryClient({"url": registry}), json.dumps(schema))
producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
context = SerializationContext(topic, MessageField.VALUE)
schema_id = None
for i in range(int(count)):
    customer = f"{prefix}-{i}"
    value = serializer(
        {
            "order_id": f"{customer}-o1",
            "customer_id": customer,
            "event_time": 1704103200000 + i * 1000,
            "status": "placed",
            "total": 20.0 + i,
            "currency": "EUR",
            "discount_amount": 0.0,
            "item_count": 1,
            "categories": ["books"],
            "payment_method": "card",
            extra: "WELCOME" if i % 2 else None,
        },
        context,
    )
    schema_id = int.from_bytes(value[1:5], "big")
    producer.produce(topic, key=customer.encode(), value=value)
producer.flush(30)
print(schema_id)

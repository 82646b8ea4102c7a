"""Checks that schemas/*.avsc alone let a standard Avro library (fastavro)
read and write segstream's topics in the Confluent wire format.

Usage: avro_contract.py SCHEMAS_DIR WORK_DIR
Reads WORK_DIR/segment-change.bin and customer-segments.bin (written by
segstream), checks their content, and writes click.bin and order.bin for
segstream to decode.
"""
import io
import json
import struct
import sys

import fastavro

schemas_dir, work = sys.argv[1], sys.argv[2]


def schema(name):
    with open(f"{schemas_dir}/{name}.avsc") as f:
        return fastavro.parse_schema(json.load(f))


def read_framed(path, parsed):
    data = open(path, "rb").read()
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == 0, f"{path}: magic byte {magic}"
    return schema_id, fastavro.schemaless_reader(io.BytesIO(data[5:]), parsed)


def write_framed(path, schema_id, parsed, record):
    buf = io.BytesIO()
    buf.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(buf, parsed, record)
    open(path, "wb").write(buf.getvalue())


sid, change = read_framed(f"{work}/segment-change.bin", schema("segment-changes"))
assert sid == 3, sid
assert change["customer_id"] == "c-42" and change["segment"] == "at_risk", change
assert change["change"] == "entered" and change["previous_segment"] == "active", change
assert change["trigger"] == "timer" and change["features"]["days_since_last_order"] == 91.0, change
assert change["cause_event_time"].year == 2024, change

sid, members = read_framed(f"{work}/customer-segments.bin", schema("customer-segments"))
assert sid == 4, sid
assert members["segments"][0]["kind"] == "lifecycle" and members["segments"][0]["segment"] == "at_risk", members

write_framed(f"{work}/click.bin", 1, schema("clickstream"), {
    "event_id": "py-1", "customer_id": "c-py", "session_id": None, "event_type": "add_to_cart",
    "event_time": 1704103200000, "device": "app", "page": None, "product_id": "p-1",
    "category": "books", "price": 12.5, "search_query": None,
})
write_framed(f"{work}/order.bin", 2, schema("orders"), {
    "order_id": "o-py", "customer_id": "c-py", "event_time": 1704103260000, "status": "refunded",
    "total": 99.9, "currency": "USD", "discount_amount": 5.0, "item_count": 2,
    "categories": ["books", "toys"], "payment_method": "paypal",
})
print("fastavro: read segstream's records and wrote a click and an order")

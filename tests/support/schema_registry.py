"""A small server of the Confluent Schema Registry REST API, for tests.

No registry can be installed on the build machines (Confluent's is not on
Maven Central, Karapace is not on PyPI), so the tests run this one. It is
kept honest by driving it with confluent-kafka's own SchemaRegistryClient
and AvroSerializer: what they register and the ids this server assigns are
what the worker must decode. It serves the calls those clients and the
worker make: register (POST /subjects/S/versions), look up
(POST /subjects/S), fetch by id (GET /schemas/ids/N), latest
(GET /subjects/S/versions/latest), list (GET /subjects). Ids start at 101
so nothing can pass by assuming segstream's fixed ids. A test can make
schema reads fail as an overloaded or half-down registry does (HTTP 503) with
POST /test/reads {"available": false}; registrations still work.

    python schema_registry.py PORT_FILE STATE_FILE [PORT]

serves on PORT (default: a free one), writes the port to PORT_FILE, and
keeps its schemas in STATE_FILE, so a server started again on the same
files is the same registry after an outage.
"""
import json
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
SCHEMAS = {}  # id -> schema text
SUBJECTS = {}  # subject -> [id per version]
NEXT_ID = [101]
CONTENT = "application/vnd.schemaregistry.v1+json"
STATE = [""]
READS = [True]


def save():
    with open(STATE[0] + ".tmp", "w") as f:
        json.dump({"schemas": SCHEMAS, "subjects": SUBJECTS, "next": NEXT_ID[0]}, f)
    os.replace(STATE[0] + ".tmp", STATE[0])


def load():
    if os.path.exists(STATE[0]):
        with open(STATE[0]) as f:
            state = json.load(f)
        SCHEMAS.update({int(k): v for k, v in state["schemas"].items()})
        SUBJECTS.update(state["subjects"])
        NEXT_ID[0] = state["next"]


def canonical(text):
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def not_found(self, code, message):
        self.answer(404, {"error_code": code, "message": message})

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self):
        path = self.path.split("?")[0]
        with LOCK:
            if not READS[0]:
                return self.answer(503, {"error_code": 50301, "message": "schema reads unavailable"})
            if m := re.fullmatch(r"/schemas/ids/(\d+)", path):
                text = SCHEMAS.get(int(m.group(1)))
                if text is None:
                    return self.not_found(40403, "Schema not found")
                return self.answer(200, {"schema": text})
            if m := re.fullmatch(r"/subjects/([^/]+)/versions/latest", path):
                ids = SUBJECTS.get(m.group(1))
                if not ids:
                    return self.not_found(40401, "Subject not found")
                sid = ids[-1]
                return self.answer(
                    200, {"subject": m.group(1), "version": len(ids), "id": sid, "schema": SCHEMAS[sid]}
                )
            if path == "/subjects":
                return self.answer(200, sorted(SUBJECTS))
        self.not_found(404, f"no route {path}")

    def do_POST(self):
        path = self.path.split("?")[0]
        request = self.body()
        if path == "/test/reads":
            READS[0] = bool(request.get("available"))
            return self.answer(200, {"available": READS[0]})
        text = request.get("schema")
        if request.get("schemaType", "AVRO") != "AVRO" or not isinstance(text, str):
            return self.answer(422, {"error_code": 42201, "message": "Invalid schema"})
        try:
            key = canonical(text)
        except ValueError:
            return self.answer(422, {"error_code": 42201, "message": "Invalid schema"})
        with LOCK:
            existing = next((i for i, t in SCHEMAS.items() if canonical(t) == key), None)
            if m := re.fullmatch(r"/subjects/([^/]+)/versions", path):
                if existing is None:
                    existing = NEXT_ID[0]
                    NEXT_ID[0] += 1
                    SCHEMAS[existing] = text
                versions = SUBJECTS.setdefault(m.group(1), [])
                if existing not in versions:
                    versions.append(existing)
                save()
                return self.answer(200, {"id": existing})
            if m := re.fullmatch(r"/subjects/([^/]+)", path):
                versions = SUBJECTS.get(m.group(1), [])
                if existing is None or existing not in versions:
                    return self.not_found(40403, "Schema not found")
                return self.answer(
                    200,
                    {"subject": m.group(1), "id": existing, "version": versions.index(existing) + 1, "schema": text},
                )
        self.not_found(404, f"no route {path}")


def main():
    STATE[0] = sys.argv[2]
    load()
    port = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    server.serve_forever()


if __name__ == "__main__":
    main()

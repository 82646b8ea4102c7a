# The verbs a newcomer uses. Everything a target needs is installed by the
# target itself (scripts/ensure-tools.sh, scripts/kafka-broker.sh install).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
KAFKA_PORT ?= 9092
BROKER_DIR ?= .local/broker

.PHONY: demo test lint bench broker broker-stop build tools clean

## demo: local Kafka + worker + synthetic traffic; prints segment changes as they happen
demo: tools build
	scripts/demo.sh

## test: formatting, lints, unit/property tests and end-to-end tests on a real broker
test: tools lint
	scripts/ensure-tools.sh python
	scripts/kafka-broker.sh install >/dev/null
	SEGSTREAM_PYTHON=$(CURDIR)/.local/venv/bin/python $(CARGO) test --workspace --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## bench: benchmarks (release build); figures and method in benches/README.md
bench: tools
	scripts/kafka-broker.sh install >/dev/null
	$(CARGO) bench --workspace --bench decode
	$(CARGO) bench --workspace --bench evaluation
	$(CARGO) bench --workspace --bench state_memory
	$(CARGO) bench --workspace --bench in_process
	$(CARGO) bench --bench pipeline
	$(CARGO) bench --workspace --bench training

## broker: start a local Kafka on 127.0.0.1:$(KAFKA_PORT) (data in $(BROKER_DIR)) with segstream's topics
broker: tools build
	scripts/kafka-broker.sh start --dir $(BROKER_DIR) --port $(KAFKA_PORT)
	target/debug/segstream --set kafka.bootstrap_servers=127.0.0.1:$(KAFKA_PORT) topics create

broker-stop:
	scripts/kafka-broker.sh stop --dir $(BROKER_DIR)

build:
	$(CARGO) build --bin segstream

tools:
	scripts/ensure-tools.sh

## clean: stop local brokers, remove local data and build output
clean:
	-scripts/kafka-broker.sh stop --dir $(BROKER_DIR)
	-scripts/kafka-broker.sh stop --dir .local/demo/broker
	rm -rf .local generated
	$(CARGO) clean

#!/usr/bin/env bash
# Makes sure the tools `make demo` and `make test` need are on this machine,
# installing what is missing from Debian's packages and PyPI. Idempotent and
# quiet when everything is there. Java and Maven for the broker are handled by
# scripts/kafka-broker.sh install.
#
#   ensure-tools.sh            Rust toolchain, C toolchain, python3 with venv
#   ensure-tools.sh python     also .local/venv with the Python test tools
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { echo "ensure-tools: $*" >&2; }
die() { echo "ensure-tools: error: $*" >&2; exit 1; }

apt_install() {
  command -v apt-get >/dev/null || die "missing $*; install them by hand (no apt-get here)"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || { command -v sudo >/dev/null && sudo=(sudo); } || die "missing $*; run as root or install them"
  say "installing $* from Debian packages"
  "${sudo[@]}" apt-get update -qq >&2 || say "apt-get update failed; trying the cached package lists"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 || die "apt-get install $* failed"
}

missing=()
command -v cc >/dev/null && command -v make >/dev/null || missing+=(build-essential)
command -v perl >/dev/null || missing+=(perl)          # librdkafka's configure script
command -v python3 >/dev/null || missing+=(python3)
command -v curl >/dev/null || missing+=(curl)          # demo: reads /metrics
command -v setsid >/dev/null || missing+=(util-linux)  # test harness: broker watchdog
# librdkafka's TLS and SASL/GSSAPI link the system OpenSSL and Cyrus SASL.
command -v pkg-config >/dev/null || missing+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
pkg-config --exists libsasl2 2>/dev/null || missing+=(libsasl2-dev)
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] || die "no Rust toolchain: install rustup (https://rustup.rs) then run make again"
  say "cargo is in ~/.cargo/bin but not on PATH: add it (source ~/.cargo/env)"
  exit 1
fi

if [ "${1:-}" = python ]; then
  VENV="$ROOT/.local/venv"
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
  fi
  # fastavro: an independent, standard Avro implementation that checks our schemas are a usable contract.
  "$VENV/bin/python" -c 'import fastavro' 2>/dev/null || "$VENV/bin/pip" install -q 'fastavro==1.13.*' >&2
  # moto's server: an S3-compatible endpoint on 127.0.0.1 for the checkpoint tests.
  "$VENV/bin/python" -c 'import moto.server, boto3' 2>/dev/null || "$VENV/bin/pip" install -q 'moto[server]==5.*' >&2
  # confluent-kafka's SchemaRegistryClient and AvroSerializer: a producer as Python teams write one,
  # which keeps the test schema registry honest.
  "$VENV/bin/python" -c 'import confluent_kafka.schema_registry.avro' 2>/dev/null \
    || "$VENV/bin/pip" install -q 'confluent-kafka[avro,schemaregistry]==2.16.*' >&2
  # The CDNOW purchase summaries (2,357 customers; with their average spend) the BG/NBD and
  # Gamma-Gamma fits are checked on, as the PyPI package lifetimes ships them: its wheel is
  # downloaded, not installed (its dependencies are heavy).
  DATA="$ROOT/.local/data"
  if [ ! -s "$DATA/cdnow_customers_summary.csv" ] || [ ! -s "$DATA/cdnow_customers_summary_with_transactions.csv" ]; then
    wheel_dir=$(mktemp -d)
    "$VENV/bin/pip" download -q --no-deps -d "$wheel_dir" 'lifetimes==0.11.3' >&2
    mkdir -p "$DATA"
    "$VENV/bin/python" -c 'import sys, zipfile, glob
z = zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0])
for name in ("cdnow_customers_summary.csv", "cdnow_customers_summary_with_transactions.csv"):
    open(sys.argv[2] + "/" + name, "wb").write(z.read("lifetimes/datasets/" + name))' "$wheel_dir" "$DATA"
    rm -rf "$wheel_dir"
  fi
  # mpmath (pure Python): the independent computation of the models' per-customer figures.
  "$VENV/bin/python" -c 'import mpmath' 2>/dev/null || "$VENV/bin/pip" install -q 'mpmath==1.3.*' >&2
fi

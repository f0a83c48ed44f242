#!/usr/bin/env bash
# The project's test command (CI runs exactly this): unit, integration and end-to-end tests of
# the relay and the consumer. Broker tests use Mosquitto on 127.0.0.1:1883 when it answers and
# always an embedded broker they start themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
# The Lambda Runtime API emulator test drives the real release binary, as `sam local` would.
cargo build --release --locked -p relay-fn
export RELAY_FN_BIN="$PWD/target/release/relay-fn"
cargo test --workspace --locked "$@"

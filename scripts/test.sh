#!/usr/bin/env bash
# The project's test command (CI runs exactly this): unit, integration and end-to-end tests of
# the relay and the consumer. Broker tests use Mosquitto on 127.0.0.1:1883 when it answers and
# always an embedded broker they start themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
# The relay's process tests (the Lambda Runtime API emulator among them) drive a release binary,
# as `sam local` would: RELAY_FN_BIN when given (CI passes the static one of the release archive,
# so the shipped binary is what is tested), else the release build made here.
if [ -z "${RELAY_FN_BIN:-}" ]; then
  cargo build --release --locked -p relay-fn
  export RELAY_FN_BIN="$PWD/target/release/relay-fn"
fi
echo "relay binary under test: $RELAY_FN_BIN"
cargo test --workspace --locked "$@"

#!/usr/bin/env bash
# The whole chain on this machine, on embedded defaults:
#   signed Qlik webhook → relay-fn (HTTP mode) → embedded MQTT broker → consumer → alerts
# Nothing external is needed: the relay starts an in-process broker because MQTT_URL is not set,
# and the consumer reads a Butler config written for the demo. The tenant API is not reachable,
# so the alerts also show how the consumer degrades: they go out and say what is missing.
#
# Ports (override with the variables): RELAY_PORT=8080, MQTT_PORT=11883.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
relay_port=${RELAY_PORT:-8080}
mqtt_port=${MQTT_PORT:-11883}
secret=relay-test-secret-do-not-use-in-production-0001   # the documented TEST secret
for tool in cargo curl openssl; do
  command -v "$tool" >/dev/null || { echo "demo: $tool is needed" >&2; exit 2; }
done

echo "== Building the relay (with its development broker) and the consumer"
cargo build --quiet -p relay-fn --features embedded-broker -p consumer
. "$(dirname "$0")/lib.sh"
relay_bin="$target_dir/debug/relay-fn"
consumer_bin="$target_dir/debug/consumer"

work=$(mktemp -d "${TMPDIR:-/tmp}/qlik-relay-demo.XXXXXX")

# A Butler config as a Butler user has it, pointed at the demo broker (plain TCP: tls false is
# the consumer's extension key) and at a tenant API that is not there. The test set-up's builder
# writes it (testkit/examples/demo-config.rs).
cargo run --quiet -p testkit --example demo-config -- "$work" "$mqtt_port" > "$work/butler.yaml"

echo "== Starting the relay on 127.0.0.1:$relay_port (embedded MQTT broker on 127.0.0.1:$mqtt_port)"
# The samples carry fixed dates, older than the default 8-day MAX_EVENT_AGE_SECS window on any
# later day: the demo switches the replay check off (0) so they pass.
WEBHOOK_SECRET=$secret LISTEN_ADDR=127.0.0.1:$relay_port EMBEDDED_MQTT_ADDR=127.0.0.1:$mqtt_port \
  MAX_EVENT_AGE_SECS=0 "$relay_bin" > "$work/relay.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$relay_port/healthz" >/dev/null 2>&1 && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/relay.log"; exit 1; }
  sleep 0.1
done

echo "== Checking the consumer's config, then starting it"
export QLIK_TENANT_JWT=eyJhbGciOiJub25lIn0.eyJzdWIiOiJkZW1vIn0.ZGVtby1zaWduYXR1cmU
"$consumer_bin" check-config --config "$work/butler.yaml"
"$consumer_bin" run --config "$work/butler.yaml" > "$work/consumer.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  grep -q "subscribed" "$work/consumer.log" 2>/dev/null && break
  kill -0 "${pids[1]}" 2>/dev/null || { cat "$work/consumer.log"; exit 1; }
  sleep 0.1
done

echo
echo "== Sending signed webhooks, as Qlik Cloud does"
export WEBHOOK_SECRET=$secret
for sample in app-reload-failed.cloudevents.json app-reload-failed.legacy.json reload-finished-failed.cloudevents.json; do
  scripts/send-sample.sh "testdata/qlik-samples/$sample" "http://127.0.0.1:$relay_port/"
done
echo "-- the same body signed with another secret (must be refused, never published):"
WEBHOOK_SECRET=some-other-secret-that-is-long-enough-000 \
  scripts/send-sample.sh testdata/qlik-samples/app-reload-failed.cloudevents.json "http://127.0.0.1:$relay_port/"

echo
echo "== Waiting for the consumer's alerts"
# Three failed-reload samples, two reloads: the CloudEvents app reload event and the reload event
# carry the same reload id, as Qlik sends both for one failed app reload, so the consumer alerts
# it once and logs the second as a duplicate.
handled() { grep -cE "app reload failed|already alerted on" "$work/consumer.log" 2>/dev/null || true; }
for _ in $(seq 150); do
  [ "$(handled)" -ge 3 ] && break
  sleep 0.1
done
echo "-- the relay (one line per request):"
grep -E "webhook (relayed|rejected)" "$work/relay.log" | sed 's/^/  /' || true
echo "-- the consumer's alerts (log destination):"
grep "app reload failed" "$work/consumer.log" | sed 's/^/  /' || true
echo "-- the second event about an already alerted reload (one alert per failed reload):"
grep "already alerted on" "$work/consumer.log" | sed 's/^/  /' || true
echo
echo "== Script logs written in Butler's path scheme (the tenant API is not reachable here, so each"
echo "   file says what could not be fetched and holds what the event carried)"
find "$work/scriptlogs" -name '*.log' | sort | sed "s|$work/|  |"
first=$(find "$work/scriptlogs" -name '*.log' | sort | head -n 1)
[ -n "$first" ] && sed 's/^/    | /' "$first"
echo
echo "Everything the demo wrote is in $work (relay.log, consumer.log, scriptlogs/, state/)."
alerts=$(grep -c "app reload failed" "$work/consumer.log" || true)
duplicates=$(grep -c "already alerted on" "$work/consumer.log" || true)
if [ "$alerts" -ne 2 ] || [ "$duplicates" -ne 1 ]; then
  echo "demo: expected 2 alerts (one per failed reload) and 1 duplicate, got $alerts and $duplicates" >&2
  exit 1
fi

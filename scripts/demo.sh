#!/usr/bin/env bash
# The whole chain on this machine, on embedded defaults:
#   signed Qlik webhook → relay-fn (HTTP mode) → embedded MQTT broker → consumer → alerts
# Nothing external is needed: the relay starts an in-process broker because MQTT_URL is not set,
# and the consumer reads a Butler config written for the demo. A stand-in of the tenant's REST API
# (testkit's `fake-tenant` example, the tests' fake tenant) answers the consumer's calls, so the
# alerts are whole: app name, owner, tags, script log head and tail. A generic webhook destination
# posts each alert to testkit's `alert-receiver` example, which prints it.
#
# Ports (override with the variables): RELAY_PORT=8080, MQTT_PORT=11883; the stand-in tenant API
# and the alert receiver take free ports (TENANT_PORT, ALERTS_PORT to choose them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
relay_port=${RELAY_PORT:-8080}
mqtt_port=${MQTT_PORT:-11883}
tenant_port=${TENANT_PORT:-0}
alerts_port=${ALERTS_PORT:-0}
# The token the stand-in tenant API accepts, and the consumer sends (a JWT's shape, no secret).
jwt=eyJhbGciOiJub25lIn0.eyJzdWIiOiJkZW1vIn0.ZGVtby1zaWduYXR1cmU
secret=relay-test-secret-do-not-use-in-production-0001   # the documented TEST secret
for tool in cargo curl openssl; do
  command -v "$tool" >/dev/null || { echo "demo: $tool is needed" >&2; exit 2; }
done

echo "== Building the relay (with its development broker), the consumer and the demo's stand-ins"
cargo build --quiet -p relay-fn --features embedded-broker -p consumer
cargo build --quiet -p testkit --example fake-tenant --example alert-receiver --example demo-config
. "$(dirname "$0")/lib.sh"
relay_bin="$target_dir/debug/relay-fn"
consumer_bin="$target_dir/debug/consumer"
examples="$target_dir/debug/examples"

work=$(mktemp -d "${TMPDIR:-/tmp}/qlik-relay-demo.XXXXXX")

# Starts a stand-in ($1: its name, then its command) with its output in $work/<name>.out, and
# sets stand_in_url to the URL of its ready line ("... listening on http://127.0.0.1:<port>").
start_stand_in() {
  local name=$1 pid
  shift
  stand_in_url=""
  "$@" > "$work/$name.out" 2>&1 &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 100); do
    stand_in_url=$(sed -n 's/.* listening on \(http:[^ ]*\).*/\1/p' "$work/$name.out")
    [ -n "$stand_in_url" ] && return
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "demo: the $name did not start:" >&2
  cat "$work/$name.out" >&2
  exit 1
}

echo "== Starting the stand-in tenant API and the alert receiver"
start_stand_in fake-tenant "$examples/fake-tenant" --port "$tenant_port" --jwt "$jwt"
tenant_url=$stand_in_url
mkdir -p "$work/alerts"
start_stand_in alert-receiver "$examples/alert-receiver" --port "$alerts_port" --save "$work/alerts"
alerts_url=$stand_in_url
echo "  tenant API: $tenant_url    alert receiver: $alerts_url"

# A Butler config as a Butler user has it, pointed at the demo broker (plain TCP: tls false is
# the consumer's extension key), at the stand-in tenant API with the JWT it accepts, and at the
# alert receiver (a generic webhook destination). The test set-up's builder writes it
# (testkit/examples/demo-config.rs).
"$examples/demo-config" "$work" "$mqtt_port" "$tenant_url" "$jwt" "$alerts_url/alerts" > "$work/butler.yaml"

echo "== Starting the relay on 127.0.0.1:$relay_port (embedded MQTT broker on 127.0.0.1:$mqtt_port)"
# The samples carry fixed dates, older than the default 8-day MAX_EVENT_AGE_SECS window on any
# later day: the demo switches the replay check off (0) so they pass.
WEBHOOK_SECRET=$secret LISTEN_ADDR=127.0.0.1:$relay_port EMBEDDED_MQTT_ADDR=127.0.0.1:$mqtt_port \
  MAX_EVENT_AGE_SECS=0 "$relay_bin" > "$work/relay.log" 2>&1 &
relay_pid=$!
pids+=("$relay_pid")
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$relay_port/healthz" >/dev/null 2>&1 && break
  kill -0 "$relay_pid" 2>/dev/null || { cat "$work/relay.log"; exit 1; }
  sleep 0.1
done

echo "== Checking the consumer's config, then starting it"
# The JWT is in the file; a token in the caller's environment would take its place, so none is.
unset QLIK_TENANT_JWT QLIK_TENANT_JWT_XQ7VR2MK9PLS4TNB8WYC1ZDE5FGH3JKQ
"$consumer_bin" check-config --config "$work/butler.yaml"
"$consumer_bin" run --config "$work/butler.yaml" > "$work/consumer.log" 2>&1 &
consumer_pid=$!
pids+=("$consumer_pid")
for _ in $(seq 100); do
  grep -q "subscribed" "$work/consumer.log" 2>/dev/null && break
  kill -0 "$consumer_pid" 2>/dev/null || { cat "$work/consumer.log"; exit 1; }
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
received() { grep -c "^== alert " "$work/alert-receiver.out" 2>/dev/null || true; }
for _ in $(seq 150); do
  [ "$(handled)" -ge 3 ] && [ "$(received)" -ge 2 ] && break
  sleep 0.1
done
echo "-- the relay (one line per request):"
grep -E "webhook (relayed|rejected)" "$work/relay.log" | sed 's/^/  /' || true
echo "-- the consumer's alerts (log destination):"
grep "app reload failed" "$work/consumer.log" | sed 's/^/  /' || true
echo "-- the second event about an already alerted reload (one alert per failed reload):"
grep "already alerted on" "$work/consumer.log" | sed 's/^/  /' || true
echo
echo "== The first alert as the receiver got it (generic webhook destination; the whole JSON is in"
echo "   alerts/alert-1.json): enriched from the stand-in tenant API with the app's name, owner,"
echo "   tags and the script log's head and tail"
first_alert=$(awk '/^== alert /{n++} n==1' "$work/alert-receiver.out")
printf '%s\n' "$first_alert" | sed 's/^/  /'
echo
echo "== Script logs written in Butler's path scheme (the whole log, fetched from the tenant API)"
find "$work/scriptlogs" -name '*.log' | sort | sed "s|$work/|  |"
first=$(find "$work/scriptlogs" -name '*.log' | sort | head -n 1)
[ -n "$first" ] && { head -n 3 "$first"; echo "..."; tail -n 3 "$first"; } | sed 's/^/    | /'

echo
echo "== consumer preview: what a Slack channel would get for the first sample, sending nothing"
# The demo has no Slack; an extension file adds the tenant's Slack alert (Butler's keys, the
# shipped template) for the preview only. Preview renders with the real parsing, tenant API and
# templates, and sends and stores nothing, so the webhook URL is never called.
cat > "$work/preview-slack.yaml" <<YAML
Butler:
  qlikSenseCloud:
    event:
      mqtt:
        tenant:
          alert:
            slackNotification:
              reloadAppFailure:
                enable: true
                webhookURL: https://hooks.slack.com/services/T00000000/B00000000/never-called
                messageType: formatted
                templateFile: $PWD/consumer/templates/slack-failed-reload-qscloud.handlebars
YAML
"$consumer_bin" preview --config "$work/butler.yaml" --extensions "$work/preview-slack.yaml" \
  --event testdata/qlik-samples/app-reload-failed.cloudevents.json --destination slack \
  > "$work/preview-slack.txt"
head -n 40 "$work/preview-slack.txt" | sed 's/^/  /'
echo "  … (the whole message is in preview-slack.txt)"
grep -q "Sales dashboard" "$work/preview-slack.txt" || {
  echo "demo: the Slack preview should name the app" >&2
  exit 1
}

echo
echo "Everything the demo wrote is in $work (relay.log, consumer.log, alert-receiver.out, alerts/,"
echo "fake-tenant.out, preview-slack.txt, scriptlogs/, state/)."
alerts=$(grep -c "app reload failed" "$work/consumer.log" || true)
duplicates=$(grep -c "already alerted on" "$work/consumer.log" || true)
if [ "$alerts" -ne 2 ] || [ "$duplicates" -ne 1 ]; then
  echo "demo: expected 2 alerts (one per failed reload) and 1 duplicate, got $alerts and $duplicates" >&2
  exit 1
fi
# The alerts are whole: what the stand-in tenant API answers (testkit::fake_tenant's defaults)
# is in every alert the receiver printed, and nothing is missing.
if [ "$(received)" -ne 2 ]; then
  echo "demo: expected the receiver to get 2 alerts, got $(received)" >&2
  exit 1
fi
for expected in \
  "app          Sales dashboard" \
  "owner        Anna Andersson" \
  "owner email  anna.andersson@example.com" \
  "tags         Finance, Butler - Send Teams alert if app reload fails" \
  "| 20261130T070612.456+0000 Execution started." \
  "| 20261130T070621.400+0000 Execution finished."; do
  count=$(grep -cF -- "$expected" "$work/alert-receiver.out" || true)
  if [ "$count" -ne 2 ]; then
    echo "demo: the alerts should show \"$expected\" (each of the 2), found it $count times;" >&2
    echo "      see $work/alert-receiver.out and $work/consumer.log" >&2
    exit 1
  fi
done
if grep -q "^  missing " "$work/alert-receiver.out" || grep -rqF "could not be fetched" "$work/scriptlogs"; then
  echo "demo: something could not be fetched from the stand-in tenant API; see $work/consumer.log" >&2
  exit 1
fi

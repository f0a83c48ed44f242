#!/usr/bin/env bash
# Runs the relay under `cargo lambda watch` (the Rust community's Docker-free Lambda emulator)
# and feeds it the same event files `sam local invoke -e` takes: a signed Function URL request
# must answer 200 and arrive on the broker, a wrongly signed one must answer 401.
#
# Needs cargo-lambda (`pip install cargo-lambda`) and an MQTT broker; MQTT_URL defaults to the
# Mosquitto on 127.0.0.1:1883. mosquitto_sub, when installed, also checks the arrival.
set -euo pipefail
cd "$(dirname "$0")/.."

port="${LAMBDA_WATCH_PORT:-19000}"
broker="${MQTT_URL:-mqtt://127.0.0.1:1883}"
root="lambda-watch-check-$$"
secret="relay-test-secret-do-not-use-in-production-0001" # the documented test secret
log="$(mktemp)"
arrived="$(mktemp)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; done
  rm -f "$log" "$arrived"
}
trap cleanup EXIT

if command -v mosquitto_sub >/dev/null && [[ "$broker" == mqtt://127.0.0.1:1883 ]]; then
  setsid mosquitto_sub -h 127.0.0.1 -p 1883 -t "$root/#" -v -C 1 -W 600 >"$arrived" &
  pids+=($!)
fi

# The sample events carry fixed 2026 times: switch the replay window off for them.
setsid cargo lambda watch -p relay-fn --invoke-address 127.0.0.1 --invoke-port "$port" \
  --env-var "WEBHOOK_SECRET=$secret,MQTT_URL=$broker,MQTT_TOPIC_ROOT=$root,MAX_EVENT_AGE_SECS=0,LOG_FORMAT=text" \
  >"$log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.2
done

invoke() {
  # The first invocation compiles the function; cargo lambda invoke waits for it.
  cargo lambda invoke relay-fn --invoke-address 127.0.0.1 --invoke-port "$port" \
    --data-file "relay-fn/events/$1" 2>&1
}
status_of() { sed -n 's/.*"statusCode":\([0-9]*\).*/\1/p' <<<"$1" | head -n1; }

good="$(invoke function-url.cloudevents-app-reload.json)" || true
bad="$(invoke function-url.bad-signature.json)" || true
ok=true
if [[ "$(status_of "$good")" == 200 ]]; then
  echo "signed Function URL request: 200"
else
  echo "signed Function URL request did not get 200: $good" >&2; ok=false
fi
if [[ "$(status_of "$bad")" == 401 ]]; then
  echo "wrongly signed request: 401"
else
  echo "wrongly signed request did not get 401: $bad" >&2; ok=false
fi
if [[ ${#pids[@]} -gt 1 ]]; then
  for _ in $(seq 50); do [[ -s "$arrived" ]] && break; sleep 0.1; done
  if grep -q "^$root/app/reload/" "$arrived"; then
    echo "arrived on the broker: $(cut -d' ' -f1 "$arrived")"
  else
    echo "nothing arrived on $root/# at $broker" >&2; ok=false
  fi
fi
if ! $ok; then
  echo "--- cargo lambda watch output" >&2
  grep -v "$secret" "$log" >&2 || true
  exit 1
fi

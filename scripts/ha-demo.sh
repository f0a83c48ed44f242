#!/usr/bin/env bash
# High availability, shown: two (or three) consumers on one broker and one Redis, a burst of
# failed-reload events, one consumer SIGKILLed for good in the middle. Prints how many events
# were published, how many alerts arrived, how many were lost and how many came twice, then the
# survivors' /healthz and event counters.
#
# Needs: Mosquitto on 127.0.0.1:1883 with mosquitto_pub (MQTT_PORT to change), Redis on
# 127.0.0.1:6379 (REDIS_URL to change), python3 (the fake alert destination), curl.
# Knobs: EVENTS=100 CONSUMERS=2 (or 3) KILL_AFTER=25 (alerts received before the kill).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mqtt_port=${MQTT_PORT:-1883}
redis_url=${REDIS_URL:-redis://127.0.0.1:6379/0}
events=${EVENTS:-100}
consumers=${CONSUMERS:-2}
kill_after=${KILL_AFTER:-25}
lease=3
for tool in cargo curl python3 mosquitto_pub; do
  command -v "$tool" >/dev/null || { echo "ha-demo: $tool is needed" >&2; exit 2; }
done

echo "== Building the consumer"
cargo build --quiet -p consumer
. "$(dirname "$0")/lib.sh"
consumer_bin="$target_dir/debug/consumer"

work=$(mktemp -d "${TMPDIR:-/tmp}/qlik-ha-demo.XXXXXX")
run_id=$(date +%s%N)
tenant=Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ
topic_root="qscloud-ha-demo-$run_id"

# The alert destination: a generic webhook that appends each alert's event id to a file.
hook_port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
python3 - "$hook_port" "$work/received" <<'PY' &
import http.server, json, sys
port, out = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(out, "a") as f:
            f.write(json.loads(body).get("eventId", "?") + "\n")
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
PY
pids+=($!)
touch "$work/received"

cat > "$work/butler.yaml" <<YAML
Butler:
  qlikSenseCloud:
    enable: true
    event:
      mqtt:
        tenant:
          id: $tenant
          tenantUrl: http://127.0.0.1:9
          authType: jwt
          auth: { jwt: { token: eyJhbGciOiJFUzM4NCJ9.eyJzdWIiOiJkZW1vIn0.ZGVtbw } }
  mqttConfig:
    qlikSenseCloud:
      event:
        mqttForward:
          enable: true
          broker: { host: 127.0.0.1, port: $mqtt_port }
          topic: { subscriptionRoot: $topic_root/#, appReload: $topic_root/app/reload }
YAML

for i in $(seq 1 "$consumers"); do
  cat > "$work/consumer-$i.yaml" <<YAML
Butler:
  mqttConfig:
    qlikSenseCloud:
      event:
        mqttForward:
          broker: { tls: false, clientId: ha-demo-$i-$run_id, cleanSession: false }
  qlikSenseCloud:
    consumer:
      stateStore: $redis_url
      claimLeaseSeconds: $lease
      stateDirectory: $work/state-$i
      deadLetterDirectory: $work/dead-letter
      metrics: { listen: 127.0.0.1:$((19463 + i)) }
      enrichment: { enable: false }
      destinations:
        webhook:
          - name: ops
            url: http://127.0.0.1:$hook_port/alert
YAML
  RUST_LOG=info NO_COLOR=1 "$consumer_bin" run --config "$work/butler.yaml" \
    --extensions "$work/consumer-$i.yaml" 2>"$work/consumer-$i.log" &
  pids+=($!)
  eval "consumer_pid_$i=$!"
done
for i in $(seq 1 "$consumers"); do
  for _ in $(seq 1 100); do
    grep -q "subscribed with QoS 1" "$work/consumer-$i.log" && break
    sleep 0.1
  done
  grep -q "subscribed with QoS 1" "$work/consumer-$i.log" || { cat "$work/consumer-$i.log"; exit 1; }
done
echo "== $consumers consumers subscribed (client ids ha-demo-N-$run_id), store $redis_url"

# The burst: CloudEvents failed reloads with unique event and reload ids, one app each (no rate
# limit in play; events about one reload would be one alert).
python3 - "$work/events" "$events" "$run_id" <<'PY'
import json, os, sys
out, n, run = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.makedirs(out, exist_ok=True)
base = json.load(open("testdata/qlik-samples/app-reload-failed.cloudevents.json"))
for i in range(n):
    e = dict(base, id=f"ha-{run}-{i}", toplevelresourceid=f"app-{i}")
    e["data"] = dict(base["data"], reloadId=f"reload-{run}-{i}")
    json.dump(e, open(f"{out}/{i:05d}.json", "w"))
PY
echo "== Publishing $events events; SIGKILL of consumer 1 after $kill_after alerts"
(for f in "$work"/events/*.json; do
   mosquitto_pub -p "$mqtt_port" -q 1 -t "$topic_root/app/reload/$tenant" -f "$f"
 done) &
publisher=$!
killed=no
for _ in $(seq 1 600); do
  got=$(sort -u "$work/received" | wc -l)
  if [ "$killed" = no ] && [ "$(wc -l <"$work/received")" -ge "$kill_after" ]; then
    kill -9 "$consumer_pid_1"; killed=yes
    echo "   consumer 1 (pid $consumer_pid_1) killed with SIGKILL after $(wc -l <"$work/received") alerts; not restarted"
  fi
  [ "$got" -ge "$events" ] && break
  sleep 0.1
done
wait "$publisher"
# Late duplicates would come within a lease after the takeover.
sleep $((lease + 2))
alerts=$(wc -l <"$work/received")
unique=$(sort -u "$work/received" | wc -l)
echo "== Result: events $events, alerts $alerts, lost $((events - unique)), duplicates $((alerts - unique))"
for i in $(seq 2 "$consumers"); do
  port=$((19463 + i))
  echo "-- consumer $i: /healthz $(curl -s http://127.0.0.1:$port/healthz)"
  curl -s "http://127.0.0.1:$port/metrics" | grep -E '^qscloud_consumer_(events|alerts)_total' | sed 's/^/   /'
done
echo "   takeovers logged: $(cat "$work"/consumer-*.log | grep -c 'taking it over' || true)"
[ "$unique" -eq "$events" ]

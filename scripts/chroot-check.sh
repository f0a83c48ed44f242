#!/usr/bin/env bash
# Runs the static binaries of a package (scripts/package.sh) in an empty root that holds only
# them, the CA certificates and the configuration: no shell, no libc, no /dev, no /proc. That is
# what the container image is (Dockerfile), so if this passes, the image's programs run. As an
# unprivileged user (65534), like the image's non-root USER:
#   1. `consumer --version` and `relay-fn --version`;
#   2. `consumer check-config` on infra/examples/ (butler.yaml + consumer.yaml) with the secrets in
#      the environment: exit 0; without them: exit 78;
#   3. the relay (HTTP mode) and `consumer run` against the Mosquitto on 127.0.0.1 (MQTT_PORT,
#      default 1883): one signed sample from testdata/qlik-samples/ through the relay, the
#      consumer's log destination reports the alert and its state lands in
#      /var/lib/qscloud-consumer; then SIGTERM stops both, each with exit code 0.
#
# Usage: scripts/chroot-check.sh [PACKAGE_DIR]
#   PACKAGE_DIR: an unpacked package, default dist/<this machine's CPU>-unknown-linux-musl
# Needs root for chroot (CI runs as root); elsewhere it uses `unshare --map-root-user` when the
# kernel allows it. Also needs curl, openssl (scripts/send-sample.sh) and python3 (a free port).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
package=${1:-dist/$(uname -m)-unknown-linux-musl}
mqtt_port=${MQTT_PORT:-1883}
ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
secret=relay-test-secret-do-not-use-in-production-0001   # the documented TEST secret
# A JWT's shape, no secret: the tenant API is never called (enrichment is off).
jwt=eyJhbGciOiJub25lIn0.eyJzdWIiOiJjaHJvb3QifQ.Y2hyb290LWNoZWNr
tenant=Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ
sample=testdata/qlik-samples/app-reload-failed.cloudevents.json
nobody=65534

fail() { echo "chroot-check: $*" >&2; exit 1; }
for program in consumer relay-fn; do
  [ -x "$package/bin/$program" ] || fail "no $package/bin/$program: run scripts/package.sh first"
done
[ -f "$ca_bundle" ] || fail "no CA certificates at $ca_bundle (apt-get install ca-certificates, or set CA_BUNDLE)"
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)

# env -i empties PATH too: the tools are named by their full paths.
chroot=$(command -v chroot) || fail "chroot is not installed (coreutils)"
if [ "$(id -u)" = 0 ]; then
  as_root=()
elif unshare --map-root-user true 2>/dev/null; then
  as_root=("$(command -v unshare)" --map-root-user)
else
  echo "SKIPPED chroot check: needs root, or unprivileged user namespaces (unshare --map-root-user)"
  exit 0
fi
# In a user namespace only the mapped ids exist: stay the (mapped) root there.
[ ${#as_root[@]} -eq 0 ] || nobody=0
mqtt_answers() { (exec 3<>"/dev/tcp/127.0.0.1/$mqtt_port") 2>/dev/null; }
mqtt_answers || fail "no MQTT broker on 127.0.0.1:$mqtt_port (CI starts Mosquitto there)"

jail=$(mktemp -d "${TMPDIR:-/tmp}/chroot-check.XXXXXX")
chmod 0755 "$jail"
work=$(mktemp -d "${TMPDIR:-/tmp}/chroot-check-logs.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$jail"
}
trap cleanup EXIT

# The root: the programs, the CA certificates, the configuration, an empty state directory.
mkdir -p "$jail/usr/local/bin" "$jail/etc/ssl/certs" "$jail/etc/qscloud-consumer" "$jail/var/lib/qscloud-consumer"
install -m 0755 "$package/bin/consumer" "$package/bin/relay-fn" "$jail/usr/local/bin/"
install -m 0644 "$ca_bundle" "$jail/etc/ssl/certs/ca-certificates.crt"
install -m 0644 infra/examples/butler.yaml infra/examples/consumer.yaml "$jail/etc/qscloud-consumer/"
# compose.yaml's extension file, with a CA file where compose mounts deploy/certs/ca.crt.
install -m 0644 infra/examples/compose-consumer.yaml "$ca_bundle" "$jail/etc/qscloud-consumer/"
mv "$jail/etc/qscloud-consumer/$(basename "$ca_bundle")" "$jail/etc/qscloud-consumer/ca.crt"
chown "$nobody:$nobody" "$jail/var/lib/qscloud-consumer" 2>/dev/null || true
chmod 0700 "$jail/var/lib/qscloud-consumer"
echo "== the root: $(cd "$jail" && find . -type f | sort | tr '\n' ' ')"

# jail_cmd VAR=value… PROGRAM ARG…: sets `cmd` to that program run in the root as the
# unprivileged user, with only the environment given. env and chroot exec the next program, so
# the pid of `"${cmd[@]}" &` is the program's own: SIGTERM reaches it.
jail_cmd() {
  local -a vars=()
  while [ $# -gt 0 ] && [[ $1 == *=* ]]; do vars+=("$1"); shift; done
  cmd=(env -i "${vars[@]}" "${as_root[@]}" "$chroot" --userspec="$nobody:$nobody" --groups="$nobody" "$jail" "$@")
}
jailed() { jail_cmd "$@"; "${cmd[@]}"; }

echo "== --version"
for program in consumer relay-fn; do
  out=$(jailed "/usr/local/bin/$program" --version 2>&1) || true
  if [ "$out" = "$program $version" ]; then
    echo "  $out"
  else
    fail "\`$program --version\` in the root printed \"$out\", expected \"$program $version\""
  fi
done

echo "== consumer check-config on infra/examples/"
config=(--config /etc/qscloud-consumer/butler.yaml --extensions /etc/qscloud-consumer/consumer.yaml)
if ! jailed QLIK_TENANT_JWT="$jwt" MQTT_PASSWORD=chroot-check-password \
  /usr/local/bin/consumer check-config "${config[@]}" > "$work/check.out" 2>&1; then
  cat "$work/check.out" >&2
  fail "check-config refused the example configuration"
fi
grep -q '^Configuration OK' "$work/check.out" || { cat "$work/check.out" >&2; fail "check-config did not say OK"; }
grep -qF 'State: /var/lib/qscloud-consumer; dead letters: /var/lib/qscloud-consumer/dead-letter' "$work/check.out" \
  || fail "the example extension file should put state and dead letters under /var/lib/qscloud-consumer"
if grep -q chroot-check-password "$work/check.out"; then fail "check-config printed the broker password"; fi
if ! jailed QLIK_TENANT_JWT="$jwt" MQTT_PASSWORD=chroot-check-password /usr/local/bin/consumer check-config \
  --config /etc/qscloud-consumer/butler.yaml --extensions /etc/qscloud-consumer/compose-consumer.yaml \
  > "$work/check-compose.out" 2>&1; then
  cat "$work/check-compose.out" >&2
  fail "check-config refused compose.yaml's configuration (butler.yaml + compose-consumer.yaml)"
fi
echo "  butler.yaml + consumer.yaml: OK; butler.yaml + compose-consumer.yaml: OK"
set +e
jailed /usr/local/bin/consumer check-config "${config[@]}" > "$work/check-nosecrets.out" 2>&1
status=$?
set -e
[ "$status" = 78 ] || { cat "$work/check-nosecrets.out" >&2; fail "without its secrets, check-config should exit 78, not $status"; }
echo "  without QLIK_TENANT_JWT and MQTT_PASSWORD: exit 78, $(grep -c 'template placeholder' "$work/check-nosecrets.out") placeholders named"

echo "== relay-fn and consumer run against the broker on 127.0.0.1:$mqtt_port"
# Topics and client id of this run only: other tests use the same broker at the same time.
run_id=chroot-check-$$-$(date +%s)
relay_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Not beside the example consumer.yaml, which the consumer would merge over it.
mkdir -p "$jail/etc/chroot-check"
cat > "$jail/etc/chroot-check/run.yaml" <<YAML
Butler:
  qlikSenseCloud:
    enable: true
    event:
      mqtt:
        tenant:
          id: $tenant
          tenantUrl: https://acme.eu.qlikcloud.com
          authType: jwt
          auth: { jwt: { token: $jwt } }
    consumer:
      stateDirectory: /var/lib/qscloud-consumer
      deadLetterDirectory: /var/lib/qscloud-consumer/dead-letter
      enrichment: { enable: false }
      destinations: { log: { enable: true } }
  mqttConfig:
    qlikSenseCloud:
      event:
        mqttForward:
          enable: true
          broker: { host: 127.0.0.1, port: $mqtt_port, tls: false, clientId: $run_id, cleanSession: true }
          topic: { subscriptionRoot: $run_id/#, appReload: $run_id/app/reload }
YAML

jail_cmd WEBHOOK_SECRET="$secret" MQTT_URL="mqtt://127.0.0.1:$mqtt_port" MQTT_TOPIC_ROOT="$run_id" \
  MAX_EVENT_AGE_SECS=0 LISTEN_ADDR="127.0.0.1:$relay_port" /usr/local/bin/relay-fn
"${cmd[@]}" > "$work/relay.log" 2>&1 &
relay_pid=$!
pids+=("$relay_pid")
jail_cmd /usr/local/bin/consumer run --config /etc/chroot-check/run.yaml
"${cmd[@]}" > "$work/consumer.log" 2>&1 &
consumer_pid=$!
pids+=("$consumer_pid")

# Waits (deadline in tenths of a second) until a command succeeds; the process must stay alive.
await() {
  local what=$1 pid=$2 log=$3 tenths=$4
  shift 4
  for _ in $(seq "$tenths"); do
    "$@" && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; fail "exited while waiting for $what"; }
    sleep 0.1
  done
  cat "$log" >&2
  fail "no $what within $((tenths / 10)) s"
}
await "the relay's /healthz" "$relay_pid" "$work/relay.log" 200 \
  curl -fs "http://127.0.0.1:$relay_port/healthz" -o /dev/null
await "the consumer's subscription" "$consumer_pid" "$work/consumer.log" 200 \
  grep -q subscribed "$work/consumer.log"

answer=$(WEBHOOK_SECRET=$secret scripts/send-sample.sh "$sample" "http://127.0.0.1:$relay_port/" 2>&1)
grep -q '^HTTP 200$' <<<"$answer" || { echo "$answer" >&2; cat "$work/relay.log" >&2; fail "the relay did not answer 200"; }
grep -qF "\"topic\":\"$run_id/app/reload/$tenant\"" <<<"$answer" || fail "unexpected relay answer: $answer"
await "alert in the consumer's log" "$consumer_pid" "$work/consumer.log" 300 \
  grep -q "app reload failed" "$work/consumer.log"
grep "app reload failed" "$work/consumer.log" | sed 's/^/  /'

# SIGTERM: both stop by themselves, with exit code 0.
stop() {
  local name=$1 pid=$2 log=$3 status
  kill -TERM "$pid"
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { cat "$log" >&2; fail "$name still running 30 s after SIGTERM"; }
  set +e
  wait "$pid"
  status=$?
  set -e
  [ "$status" = 0 ] || { cat "$log" >&2; fail "$name exited with $status after SIGTERM"; }
  echo "  $name: stopped by SIGTERM, exit 0"
}
stop consumer "$consumer_pid" "$work/consumer.log"
stop relay-fn "$relay_pid" "$work/relay.log"
pids=()

state=$(cd "$jail/var/lib/qscloud-consumer" && find . -type f | sort | tr '\n' ' ')
[ -n "$state" ] || fail "the consumer wrote nothing under /var/lib/qscloud-consumer"
echo "  state in /var/lib/qscloud-consumer: $state"
rm -rf "$work"
echo "chroot check passed: $package runs in an empty root with only its binaries and CA certificates"

#!/usr/bin/env bash
# Sends a Qlik Cloud webhook body to the relay, signed as Qlik signs it:
#   Qlik-Signature: hex(HMAC-SHA256(secret, raw body bytes))
# Usage: scripts/send-sample.sh [--now] [BODY_FILE] [RELAY_URL]
#   --now      stamp the event with the current time first (its `time` / `eventTime`): the samples
#              carry fixed dates, and a relay refuses events older than MAX_EVENT_AGE_SECS
#              (8 days by default) with 403
#   BODY_FILE  default testdata/qlik-samples/app-reload-failed.cloudevents.json
#   RELAY_URL  default http://127.0.0.1:8080/ (or $RELAY_URL)
#   WEBHOOK_SECRET  default: the documented test secret (never use it for a real webhook)
set -euo pipefail
now=false
if [ "${1:-}" = "--now" ]; then now=true; shift; fi
here=$(cd "$(dirname "$0")/.." && pwd)
body=${1:-$here/testdata/qlik-samples/app-reload-failed.cloudevents.json}
url=${2:-${RELAY_URL:-http://127.0.0.1:8080/}}
secret=${WEBHOOK_SECRET:-relay-test-secret-do-not-use-in-production-0001}
for tool in openssl curl; do
  command -v "$tool" >/dev/null || { echo "send-sample: $tool is needed (apt-get install $tool)" >&2; exit 2; }
done
[ -f "$body" ] || { echo "send-sample: no such file: $body" >&2; exit 2; }
name=$(basename "$body")
if $now; then
  stamped=$(mktemp)
  trap 'rm -f "$stamped"' EXIT
  sed -E "s/\"(time|eventTime)\":\"[^\"]*\"/\"\1\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"/g" "$body" > "$stamped"
  body=$stamped
fi
signature=$(openssl dgst -sha256 -hmac "$secret" -r < "$body" | cut -d' ' -f1)
echo "POST $url  ($name, $(wc -c < "$body") bytes)" >&2
curl -sS -w '\nHTTP %{http_code}\n' -X POST "$url" \
  -H 'Content-Type: application/json' -H 'User-Agent: Qlik Webhook' \
  -H "Qlik-Signature: $signature" --data-binary @"$body"

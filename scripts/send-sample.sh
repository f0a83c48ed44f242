#!/usr/bin/env bash
# Sends a Qlik Cloud webhook body to the relay, signed as Qlik signs it:
#   Qlik-Signature: hex(HMAC-SHA256(secret, raw body bytes))
# Usage: scripts/send-sample.sh [BODY_FILE] [RELAY_URL]
#   BODY_FILE  default testdata/qlik-samples/app-reload-failed.cloudevents.json
#   RELAY_URL  default http://127.0.0.1:8080/ (or $RELAY_URL)
#   WEBHOOK_SECRET  default: the documented test secret (never use it for a real webhook)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
body=${1:-$here/testdata/qlik-samples/app-reload-failed.cloudevents.json}
url=${2:-${RELAY_URL:-http://127.0.0.1:8080/}}
secret=${WEBHOOK_SECRET:-relay-test-secret-do-not-use-in-production-0001}
for tool in openssl curl; do
  command -v "$tool" >/dev/null || { echo "send-sample: $tool is needed (apt-get install $tool)" >&2; exit 2; }
done
[ -f "$body" ] || { echo "send-sample: no such file: $body" >&2; exit 2; }
signature=$(openssl dgst -sha256 -hmac "$secret" -r < "$body" | cut -d' ' -f1)
echo "POST $url  ($(basename "$body"), $(wc -c < "$body") bytes)" >&2
curl -sS -w '\nHTTP %{http_code}\n' -X POST "$url" \
  -H 'Content-Type: application/json' -H 'User-Agent: Qlik Webhook' \
  -H "Qlik-Signature: $signature" --data-binary @"$body"

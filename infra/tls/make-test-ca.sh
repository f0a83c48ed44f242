#!/usr/bin/env bash
# Makes a private test CA and certificates with openssl, for trying TLS (and mutual TLS) locally:
#
#   DIR/ca.crt, DIR/ca.key                  the CA (10 years). Trust it: MQTT_CA_FILE (relay),
#                                           broker.caFile (consumer), cafile (Mosquitto).
#   DIR/server.crt, DIR/server.key          the broker's certificate (825 days), names (SAN):
#                                           localhost, 127.0.0.1 and every HOSTNAME given.
#   DIR/client-NAME.crt, client-NAME.key    with --client NAME: a client certificate with CN=NAME
#                                           (for Mosquitto's use_identity_as_username, CN = user).
#
# Usage: make-test-ca.sh [--client NAME]... DIR [HOSTNAME|IP]...
#   infra/tls/make-test-ca.sh /tmp/mqtt-tls
#   infra/tls/make-test-ca.sh --client relay --client consumer ./tls broker.lan 192.0.2.10
#
# Idempotent: what exists and is still good (key matches, signed by this CA, valid for 30 more
# days, server names cover the requested ones) is kept; anything else is made anew. Running it
# again with another HOSTNAME reissues only the server certificate. Keys are EC P-256, mode 0600.
#
# For tests and trials only. A broker reachable from AWS should have a certificate from a public
# CA (e.g. Let's Encrypt) so the relay needs no MQTT_CA_FILE.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

clients=()
while [ $# -gt 0 ]; do
  case "$1" in
    --client) [ $# -ge 2 ] || usage; clients+=("$2"); shift 2 ;;
    --client=*) clients+=("${1#--client=}"); shift ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    -*) echo "unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || usage
dir=$1
shift
hosts=("$@")

command -v openssl >/dev/null || { echo "openssl is not installed" >&2; exit 1; }

is_ipv4() { [[ $1 =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ ]]; }
is_dns() { [[ $1 =~ ^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]]; }

# The server's names, as openssl prints them (`-ext subjectAltName`) and as the config needs them.
san_printed=("DNS:localhost" "IP Address:127.0.0.1")
san_config="DNS:localhost,IP:127.0.0.1"
for host in "${hosts[@]}"; do
  if is_ipv4 "$host"; then
    entry_printed="IP Address:$host"; entry_config="IP:$host"
  elif is_dns "$host"; then
    entry_printed="DNS:$host"; entry_config="DNS:$host"
  else
    echo "not a host name or IPv4 address: $host" >&2
    exit 2
  fi
  if [[ " ${san_printed[*]} " != *" $entry_printed "* ]]; then
    san_printed+=("$entry_printed")
    san_config+=",$entry_config"
  fi
done
for name in "${clients[@]}"; do
  [[ $name =~ ^[A-Za-z0-9._-]+$ ]] || { echo "not a usable client name: $name" >&2; exit 2; }
done

mkdir -p "$dir"
umask 077
tmp=$(mktemp -d "$dir/.make-test-ca.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# Whether cert $1 and key $2 exist, belong together, and stay valid for 30 more days.
pair_ok() {
  [ -s "$1" ] && [ -s "$2" ] || return 1
  openssl x509 -in "$1" -noout -checkend $((30 * 24 * 3600)) >/dev/null 2>&1 || return 1
  [ "$(openssl x509 -in "$1" -noout -pubkey 2>/dev/null)" = \
    "$(openssl pkey -in "$2" -pubout 2>/dev/null)" ] || return 1
}

signed_by_ca() { openssl verify -CAfile "$dir/ca.crt" "$1" >/dev/null 2>&1; }

# Issues $1.crt/$1.key in $dir, signed by the CA, with subject $2 and the extension lines $3.
issue() {
  local base=$1 subject=$2 extensions=$3
  new_key "$tmp/$base.key"
  openssl req -new -key "$tmp/$base.key" -subj "$subject" -out "$tmp/$base.csr" 2>/dev/null
  printf '%s\n' "$extensions" >"$tmp/$base.ext"
  openssl x509 -req -in "$tmp/$base.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 825 -sha256 \
    -extfile "$tmp/$base.ext" -out "$tmp/$base.crt" 2>/dev/null
  mv -f "$tmp/$base.key" "$dir/$base.key"
  mv -f "$tmp/$base.crt" "$dir/$base.crt"
  chmod 600 "$dir/$base.key"
  chmod 644 "$dir/$base.crt"
}

describe() {
  local what=$1 file=$2
  printf '%-5s %s\n' "$what" "$file"
  openssl x509 -in "$file" -noout -subject -enddate 2>/dev/null | sed 's/^/        /'
}

# --- the CA -----------------------------------------------------------------------------------
if pair_ok "$dir/ca.crt" "$dir/ca.key"; then
  ca_state=kept
else
  new_key "$tmp/ca.key"
  openssl req -x509 -new -key "$tmp/ca.key" -sha256 -days 3650 \
    -subj "/O=qlik-cloud-relay test/CN=qlik-cloud-relay test CA $(date +%Y%m%d%H%M%S)" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$tmp/ca.crt" 2>/dev/null
  mv -f "$tmp/ca.key" "$dir/ca.key"
  mv -f "$tmp/ca.crt" "$dir/ca.crt"
  chmod 600 "$dir/ca.key"
  chmod 644 "$dir/ca.crt"
  ca_state=made
fi
describe "$ca_state" "$dir/ca.crt"

# --- the server certificate --------------------------------------------------------------------
server_ok() {
  pair_ok "$dir/server.crt" "$dir/server.key" && signed_by_ca "$dir/server.crt" || return 1
  local names entry
  names=$(openssl x509 -in "$dir/server.crt" -noout -ext subjectAltName 2>/dev/null | tail -n +2)
  names=",${names// /},"
  for entry in "${san_printed[@]}"; do
    [[ $names == *",${entry// /},"* ]] || return 1
  done
}
if server_ok; then
  state=kept
else
  cn=${hosts[0]:-localhost}
  issue server "/O=qlik-cloud-relay test/CN=$cn" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$san_config
authorityKeyIdentifier=keyid
subjectKeyIdentifier=hash"
  state=made
fi
describe "$state" "$dir/server.crt"
names=$(IFS=,; echo "${san_printed[*]}")
printf '        names: %s\n' "${names//,/, }"

# --- client certificates (mutual TLS) ----------------------------------------------------------
for name in "${clients[@]}"; do
  base="client-$name"
  if pair_ok "$dir/$base.crt" "$dir/$base.key" && signed_by_ca "$dir/$base.crt" \
    && openssl x509 -in "$dir/$base.crt" -noout -subject -nameopt multiline 2>/dev/null \
      | grep -qx " *commonName *= $name"; then
    state=kept
  else
    issue "$base" "/O=qlik-cloud-relay test/CN=$name" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
authorityKeyIdentifier=keyid
subjectKeyIdentifier=hash"
    state=made
  fi
  describe "$state" "$dir/$base.crt"
done

keys=()
for key in "$dir"/*.key; do keys+=("${key##*/}"); done
printf 'keys  %s (mode 0600; never share ca.key)\n' "${keys[*]}"

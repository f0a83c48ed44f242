#!/usr/bin/env bash
# Checks the service files in infra/systemd/ as systemd would read them:
#   - no directive line carries a `#` (systemd treats only whole lines starting with # or ; as
#     comments: `EnvironmentFile=/etc/x.env  # secrets` names a file called "/etc/x.env  # secrets");
#     the environment file examples too, whose values systemd also reads up to the end of the line;
#   - the users the units run as are the ones the sysusers.d file creates, and neither is root;
#   - `systemd-analyze verify` on both units in a scratch root that holds the sysusers.d users and
#     the programs at /usr/local/bin (any output fails: verify exits 0 on unknown keys and bad
#     values, printing only a warning), and `systemd-analyze security --offline` under a bound.
#
# Usage: scripts/check-systemd-units.sh [BIN_DIR]
#   BIN_DIR holds `consumer` and `relay-fn` (default: the debug build in the target directory);
#   CI passes the static binaries of the release archive. Without systemd-analyze (not Linux, or
#   a minimal container) only the first two checks run, and the script says so.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/lib.sh
bin_dir=${1:-$target_dir/debug}
units=(qscloud-consumer.service qscloud-relay.service)
# systemd-analyze security's exposure score, times ten (1.4 is 14): 0 is locked down, 100 wide open.
max_exposure=20

failed=0
fail() {
  echo "check-systemd-units: $*" >&2
  failed=1
}

for file in infra/systemd/*.service infra/systemd/*.env.example; do
  # Whole-line comments and blank lines are fine; a `#` anywhere else is part of a value.
  while IFS=: read -r line text; do
    fail "$file:$line: a '#' on a directive line is not a comment to systemd: $text"
  done < <(grep -n '#' "$file" | grep -vE '^[0-9]+:[[:space:]]*[#;]' || true)
done

declare -A sysusers=()
while read -r kind name _; do
  [ "$kind" = u ] && sysusers[$name]=1
done < <(grep -vE '^[[:space:]]*(#|$)' infra/systemd/qscloud.sysusers.conf)
for unit in "${units[@]}"; do
  for key in User Group; do
    value=$(sed -n "s/^$key=//p" "infra/systemd/$unit")
    if [ -z "$value" ] || [ "$value" = root ] || [ "$value" = 0 ]; then
      fail "$unit: $key= must name the service's own user, not ${value:-nothing}"
    elif [ -z "${sysusers[$value]:-}" ]; then
      fail "$unit: $key=$value is not created by infra/systemd/qscloud.sysusers.conf"
    fi
  done
done

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "SKIPPED systemd-analyze verify: systemd-analyze is not installed here"
  [ "$failed" = 0 ] && echo "infra/systemd: no inline comments, dedicated users"
  exit "$failed"
fi
for program in consumer relay-fn; do
  [ -x "$bin_dir/$program" ] || { echo "check-systemd-units: no $bin_dir/$program (build it first)" >&2; exit 2; }
done

scratch=$(mktemp -d "${TMPDIR:-/tmp}/systemd-units.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
# verify loads the units' dependencies (sysinit.target, …) from the root: the host's own unit
# directory provides them.
mkdir -p "$scratch/usr/local/bin" "$scratch/etc/systemd/system" "$scratch/usr/lib/systemd"
for dir in /usr/lib/systemd/system /lib/systemd/system; do
  if [ -d "$dir" ]; then
    cp -a "$dir" "$scratch/usr/lib/systemd/"
    break
  fi
done
cp "$bin_dir/consumer" "$bin_dir/relay-fn" "$scratch/usr/local/bin/"
cp "${units[@]/#/infra/systemd/}" "$scratch/etc/systemd/system/"
if command -v systemd-sysusers >/dev/null 2>&1; then
  # An absolute path: systemd-sysusers looks for a relative one inside --root.
  if ! out=$(systemd-sysusers --root="$scratch" "$root/infra/systemd/qscloud.sysusers.conf" 2>&1); then
    printf '%s\n' "$out" >&2
    fail "systemd-sysusers refused infra/systemd/qscloud.sysusers.conf"
  fi
fi

out=$(systemd-analyze verify --root="$scratch" --man=no "${units[@]}" 2>&1) || fail "systemd-analyze verify failed"
if [ -n "$out" ]; then
  printf '%s\n' "$out" >&2
  fail "systemd-analyze verify has complaints (above)"
fi
for unit in "${units[@]}"; do
  if ! score=$(systemd-analyze security --offline=true --root="$scratch" --threshold="$max_exposure" \
    "$unit" 2>&1 | grep -F 'Overall exposure level'); then
    systemd-analyze security --offline=true --root="$scratch" "$unit" >&2 || true
    fail "$unit: exposure above $max_exposure/100 (systemd-analyze security, above)"
  fi
  echo "${score#→ }"
done

if [ "$failed" = 0 ]; then
  echo "infra/systemd: no inline comments, dedicated users, systemd-analyze verify clean"
fi
exit "$failed"

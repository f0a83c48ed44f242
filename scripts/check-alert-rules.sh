#!/usr/bin/env bash
# Checks the consumer's Prometheus alert rules with promtool: `promtool check rules` on
# infra/prometheus/consumer-alerts.yml, then `promtool test rules` on its unit tests
# (infra/prometheus/consumer-alerts.test.yml: a healthy single consumer fires nothing; a lost
# broker or shared store fires).
#
# promtool is taken from PATH, or from target/tools/promtool. With --install, a missing promtool
# is taken from Debian's `prometheus` package: only the package file is downloaded (about 19 MB,
# `apt-get download`) and promtool extracted from it into target/tools/, so no Prometheus server
# is installed or started. Where it cannot be had, the check says so and is skipped.
#
# Usage: scripts/check-alert-rules.sh [--install]
# Exit: 0 rules valid and their tests pass (or promtool not available: skipped), 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

tools="$PWD/target/tools"
promtool=$(command -v promtool || true)
[ -z "$promtool" ] && [ -x "$tools/promtool" ] && promtool="$tools/promtool"

if [ -z "$promtool" ] && [ "${1:-}" = "--install" ] && command -v apt-get >/dev/null; then
  download=$(mktemp -d)
  (
    cd "$download"
    apt-get download prometheus >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 && apt-get download prometheus >/dev/null 2>&1; }
  ) || true
  if deb=$(compgen -G "$download/prometheus_*.deb"); then
    dpkg-deb -x "$deb" "$download/root"
    mkdir -p "$tools"
    cp "$download/root/usr/bin/promtool" "$tools/promtool"
    promtool="$tools/promtool"
  fi
  rm -rf "$download"
fi

if [ -z "$promtool" ]; then
  echo "SKIPPED: promtool is not installed and could not be had (Debian package prometheus)"
  exit 0
fi

"$promtool" --version 2>&1 | head -1
"$promtool" check rules infra/prometheus/consumer-alerts.yml
# promtool resolves rule_files relative to the test file.
(cd infra/prometheus && "$promtool" test rules consumer-alerts.test.yml)

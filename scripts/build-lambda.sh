#!/usr/bin/env bash
# Builds the relay for AWS Lambda (provided.al2023, arm64/Graviton) and prints the zip it made:
#   target/lambda/relay-fn/bootstrap.zip   (the `bootstrap` executable, as the runtime expects)
#
# Needs: a Rust toolchain (rustup), Python 3 with pip. Installs what is missing:
#   - cargo-lambda, from PyPI (`pip install cargo-lambda`), which also brings Zig (the `ziglang`
#     package) as the cross-linker, so no aarch64 GCC or Docker is needed;
#   - the Rust standard library for aarch64-unknown-linux-gnu (`rustup target add`).
#
# Usage: scripts/build-lambda.sh [extra `cargo lambda build` arguments]
#   e.g. scripts/build-lambda.sh --locked
#        scripts/build-lambda.sh --include certs   # adds ./certs/* to the zip (/var/task/certs/ in
#                                                   # Lambda); give paths RELATIVE to the repository
#                                                   # root: an absolute path is stored as such
# Then: `sam deploy --guided` (see docs/deploy-aws.md), or upload the zip yourself.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
# Respect CARGO_TARGET_DIR (a shared or cached target directory).
ZIP="${CARGO_TARGET_DIR:-$PWD/target}/lambda/relay-fn/bootstrap.zip"

say() { printf '== %s\n' "$*" >&2; }

. scripts/pip-tool.sh
need_pip_tool cargo-lambda cargo lambda --version
say "$(cargo lambda --version)"

if command -v rustup >/dev/null 2>&1; then
  if ! rustup target list --installed | grep -qx "$TARGET"; then
    say "adding the Rust target $TARGET (rustup target add)"
    rustup target add "$TARGET" || {
      echo "rustup could not add $TARGET (is the Rust distribution server reachable?)." >&2
      echo "cargo-lambda cross-compiles with Zig, but it still needs the target's standard library." >&2
      exit 1
    }
  fi
else
  say "no rustup: assuming the toolchain already has the $TARGET standard library"
fi

say "cargo lambda build --release --arm64 -p relay-fn --output-format zip $*"
start=$(date +%s)
cargo lambda build --release --arm64 -p relay-fn --output-format zip "$@"
elapsed=$(( $(date +%s) - start ))

if [ ! -f "$ZIP" ]; then
  echo "expected $ZIP, but cargo lambda did not write it" >&2
  exit 1
fi
bytes=$(wc -c <"$ZIP")
say "built in ${elapsed}s"
printf '%s\t%s bytes (%s KiB)\n' "$ZIP" "$bytes" "$(( (bytes + 1023) / 1024 ))"

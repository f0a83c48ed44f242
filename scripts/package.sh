#!/usr/bin/env bash
# Builds the release archives: static (musl) binaries of `consumer` and `relay-fn`, with what a
# server needs beside them, one archive per target:
#   dist/qscloud-relay-<version>-<target>.tar.gz        and its .sha256
#   dist/<target>/                                      the same files unpacked (what the
#                                                       Dockerfile and scripts/chroot-check.sh use)
# The archive holds one directory, qscloud-relay-<version>-<target>/, with bin/consumer,
# bin/relay-fn, SHA256SUMS (of the two binaries), INSTALL, infra/systemd/*, infra/examples/*,
# infra/mosquitto/*, infra/prometheus/* and infra/grafana/* (alert rules and dashboard), and
# templates/ (the consumer's Slack, Teams and email templates, built into the binary too, to copy
# and edit for `templateFile`). docs/install.md says what to do with it.
#
# Needs: a Rust toolchain (rustup), Python 3 with pip. Installs what is missing:
#   - cargo-zigbuild, from PyPI (`pip install cargo-zigbuild`), which brings Zig (the `ziglang`
#     package) as the C compiler and linker for both targets: the TLS library (aws-lc-sys)
#     compiles C, and Zig ships musl for every CPU, so no musl-gcc, cross GCC or Docker is needed;
#   - the Rust standard library of each target (`rustup target add`).
#
# Each binary is checked: statically linked (no program interpreter, no shared library needed),
# and it answers --version: natively on x86_64, under qemu-aarch64 for aarch64 when qemu-user is
# installed (otherwise the script says it skipped that).
#
# Usage: scripts/package.sh [target…]
#   targets: x86_64-unknown-linux-musl, aarch64-unknown-linux-musl (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

all_targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
for target in "${targets[@]}"; do
  case " ${all_targets[*]} " in
    *" $target "*) ;;
    *) echo "package.sh: unknown target $target (known: ${all_targets[*]})" >&2; exit 2 ;;
  esac
done

say() { printf '== %s\n' "$*" >&2; }
programs=(consumer relay-fn)
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
[ -n "$version" ] || { echo "package.sh: no version in Cargo.toml's [workspace.package]" >&2; exit 1; }
# Respect CARGO_TARGET_DIR (a shared or cached target directory).
target_dir=${CARGO_TARGET_DIR:-$root/target}
dist=$root/dist

. scripts/pip-tool.sh
need_pip_tool cargo-zigbuild cargo-zigbuild --version
say "$(cargo-zigbuild --version)"

if command -v rustup >/dev/null 2>&1; then
  installed=$(rustup target list --installed)
  for target in "${targets[@]}"; do
    if ! grep -qx "$target" <<<"$installed"; then
      say "adding the Rust target $target (rustup target add)"
      rustup target add "$target" || {
        echo "rustup could not add $target (is the Rust distribution server reachable?)." >&2
        exit 1
      }
    fi
  done
else
  say "no rustup: assuming the toolchain already has the standard library of ${targets[*]}"
fi

# Statically linked: no PT_INTERP (program interpreter, i.e. no dynamic loader) and no
# DT_NEEDED (shared library). `file` is the fallback where binutils is missing.
check_static() {
  local binary=$1
  if command -v readelf >/dev/null 2>&1; then
    if readelf -lW "$binary" | grep -q 'INTERP'; then
      echo "package.sh: $binary has a program interpreter: not static" >&2
      readelf -lW "$binary" | grep -A1 INTERP >&2
      return 1
    fi
    if readelf -dW "$binary" | grep -q '(NEEDED)'; then
      echo "package.sh: $binary needs shared libraries: not static" >&2
      readelf -dW "$binary" | grep '(NEEDED)' >&2
      return 1
    fi
  elif command -v file >/dev/null 2>&1; then
    file -b "$binary" | grep -qE 'static(-pie)? linked|statically linked' || {
      echo "package.sh: $binary is not statically linked: $(file -b "$binary")" >&2
      return 1
    }
  else
    echo "package.sh: neither readelf nor file is installed: cannot check that $binary is static" >&2
    return 1
  fi
}

# How to run a binary of this target here: nothing (native), qemu-user, or not at all.
runner_for() {
  local target=$1 arch=${1%%-*}
  if [ "$(uname -m)" = "$arch" ]; then
    echo native
  elif command -v "qemu-$arch" >/dev/null 2>&1; then
    echo "qemu-$arch"
  elif command -v "qemu-$arch-static" >/dev/null 2>&1; then
    echo "qemu-$arch-static"
  fi
}

# `<program> --version` prints "<program> <version>"; an empty environment makes sure that a
# program that ignored the option could not start a server with the caller's settings.
check_version() {
  local runner=$1 binary=$2 program=$3 out
  local cmd=("$binary" --version)
  [ "$runner" = native ] || cmd=("$runner" "$binary" --version)
  out=$(env -i timeout 20 "${cmd[@]}" 2>&1) || true
  if [ "$out" = "$program $version" ]; then
    echo "  $program --version: $out"
    return 0
  fi
  echo "package.sh: \`$program --version\` printed \"$out\", expected \"$program $version\"" >&2
  return 1
}

mkdir -p "$dist"
summary=()
for target in "${targets[@]}"; do
  say "cargo zigbuild --release --locked --target $target -p consumer -p relay-fn"
  start=$(date +%s)
  cargo zigbuild --release --locked --target "$target" -p consumer -p relay-fn
  elapsed=$(( $(date +%s) - start ))
  say "$target built in ${elapsed}s"

  name=qscloud-relay-$version-$target
  stage=$dist/$target
  rm -rf "$stage"
  mkdir -p "$stage/bin" "$stage/infra"
  for program in "${programs[@]}"; do
    install -m 0755 "$target_dir/$target/release/$program" "$stage/bin/$program"
    check_static "$stage/bin/$program"
  done
  runner=$(runner_for "$target")
  if [ -n "$runner" ]; then
    for program in "${programs[@]}"; do
      check_version "$runner" "$stage/bin/$program" "$program"
    done
  else
    echo "  SKIPPED --version of the $target binaries: not this machine's CPU and no qemu-${target%%-*} (apt-get install qemu-user)"
  fi
  # Paths as they are in the archive's directory, where docs/install.md runs `sha256sum -c`.
  (cd "$stage" && sha256sum "${programs[@]/#/bin/}" > SHA256SUMS && sha256sum --quiet -c SHA256SUMS)
  cp -r infra/systemd infra/examples infra/mosquitto infra/prometheus infra/grafana "$stage/infra/"
  cp -r consumer/templates "$stage/templates"
  sed -e "s/@VERSION@/$version/g" -e "s/@TARGET@/$target/g" infra/INSTALL.in > "$stage/INSTALL"

  archive=$dist/$name.tar.gz
  # Reproducible listing: sorted names, no owner of this machine, one top directory.
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$(git log -1 --format=%ct 2>/dev/null || date +%s)" \
    --transform "s|^$target|$name|" -C "$dist" -czf "$archive" "$target"
  (cd "$dist" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
  sizes=$(for program in "${programs[@]}"; do printf '%s %s KiB, ' "$program" "$(( ($(wc -c <"$stage/bin/$program") + 1023) / 1024 ))"; done)
  summary+=("$(printf '%s\t%s KiB (%sbuilt in %ss)' "dist/$name.tar.gz" "$(( ($(wc -c <"$archive") + 1023) / 1024 ))" "$sizes" "$elapsed")")
done
printf '%s\n' "${summary[@]}"

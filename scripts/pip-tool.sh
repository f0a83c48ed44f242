# Sourced by the build scripts (package.sh, build-lambda.sh): a command from a PyPI package.
#   need_pip_tool <package> <command> [args…]
# runs `<command> [args…]` as the check. The user base's bin directory (where a `pip install
# --user` puts console scripts, e.g. an earlier run's) goes on PATH first, so a tool installed
# before is found instead of installed again; only then does pip install the package.
need_pip_tool() {
  local package=$1
  shift
  PATH="$(python3 -m site --user-base)/bin:$PATH"
  export PATH
  hash -r
  "$@" >/dev/null 2>&1 && return 0
  printf '== %s not found: installing it from PyPI (pip install %s)\n' "$1" "$package" >&2
  python3 -m pip install --quiet --disable-pip-version-check --user "$package" \
    || python3 -m pip install --quiet --disable-pip-version-check "$package"
  # pyenv exposes new console scripts only after a rehash.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
  hash -r
  "$@" >/dev/null 2>&1 || {
    echo "$package was installed but \`$*\` does not run; add \$(python3 -m site --user-base)/bin to PATH" >&2
    exit 1
  }
}

#!/usr/bin/env bash
# Checks the Dockerfile and compose.yaml as far as a machine without a container engine can:
#   - compose.yaml parses as YAML; every service builds a Dockerfile stage that exists or names an
#     image; every file or directory it mounts or reads from the repository exists; the ones it
#     reads from ./deploy/ (yours: Butler file, secrets, certificates, passwords) are each named
#     in docs/install.md, which says how to make them; every named volume is declared;
#   - the Dockerfile's stages: the ones compose and docs/install.md build exist, and what each
#     COPY takes from the build context is in dist/ (after scripts/package.sh for that target)
#     and not excluded by .dockerignore;
#   - `docker compose config`, when the compose plugin is installed.
# Usage: scripts/check-container-files.sh [target…]   (the packaged targets to look for in dist/;
#        default: every target whose dist/<target>/bin exists)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - "$@" <<'PY'
import fnmatch, os, re, sys
import yaml

problems = []
def problem(message):
    problems.append(message)

# --- Dockerfile ------------------------------------------------------------------------------
dockerfile = open("Dockerfile").read().splitlines()
stages, copies = set(), []
for number, line in enumerate(dockerfile, 1):
    m = re.match(r"\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
    if m and m.group(2):
        stages.add(m.group(2))
    m = re.match(r"\s*COPY\s+(.*)", line, re.I)
    if m:
        words = m.group(1).split()
        if not any(w.startswith("--from=") for w in words):
            sources = [w for w in words if not w.startswith("--")][:-1]
            copies.extend((number, s) for s in sources)
for needed in ("consumer", "relay"):
    if needed not in stages:
        problem(f"Dockerfile: no stage `{needed}` (docs/install.md builds it)")

ignore = [l.strip() for l in open(".dockerignore") if l.strip() and not l.startswith("#")]
def ignored(path):
    # .dockerignore semantics, enough for its patterns: the last matching line wins.
    verdict = False
    for pattern in ignore:
        negate = pattern.startswith("!")
        p = pattern[1:] if negate else pattern
        p = p.rstrip("/")
        if fnmatch.fnmatch(path, p) or path.startswith(p + "/"):
            verdict = not negate
    return verdict

targets = sys.argv[1:] or [t for t in ("x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl")
                           if os.path.isdir(f"dist/{t}/bin")]
if not targets:
    problem("dist/: no packaged target (run scripts/package.sh first)")
for number, source in copies:
    source = source.rstrip("/")
    target = next((t for t in targets if f"/{t}/" in f"/{source}/"), None)
    if source.startswith("dist/") and target is None:
        continue  # a target not packaged here
    if not os.path.exists(source):
        problem(f"Dockerfile:{number}: COPY source {source} does not exist")
    for program in ("consumer", "relay-fn"):
        path = f"{source}/{program}"
        if os.path.isdir(source) and ignored(path):
            problem(f"Dockerfile:{number}: .dockerignore excludes {path} from the build context")

# --- compose.yaml ----------------------------------------------------------------------------
compose = yaml.safe_load(open("compose.yaml"))
install_doc = open("docs/install.md").read()
declared = set((compose.get("volumes") or {}).keys())
services = compose.get("services") or {}
for required in ("consumer", "mosquitto", "redis"):
    if required not in services:
        problem(f"compose.yaml: no service `{required}`")
def check_path(service, path):
    path = os.path.normpath(path)
    if path == "deploy" or path.startswith("deploy/"):
        named = [path] + [os.path.dirname(path)] * (path.count("/") > 1)
        if not any(f"`{p}`" in install_doc for p in named):
            problem(f"compose.yaml: {service} reads {path}, which docs/install.md does not name")
    elif not os.path.exists(path):
        problem(f"compose.yaml: {service} reads {path}, which does not exist")
for name, service in services.items():
    build = service.get("build")
    if build:
        context = build.get("context", ".") if isinstance(build, dict) else build
        if not os.path.isdir(context):
            problem(f"compose.yaml: {name}: build context {context} does not exist")
        target = build.get("target") if isinstance(build, dict) else None
        if target and target not in stages:
            problem(f"compose.yaml: {name}: Dockerfile has no stage `{target}`")
    elif not service.get("image"):
        problem(f"compose.yaml: {name}: neither build nor image")
    for env_file in service.get("env_file") or []:
        check_path(name, env_file if isinstance(env_file, str) else env_file["path"])
    for volume in service.get("volumes") or []:
        source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source")
        if source.startswith((".", "/")):
            check_path(name, source)
        elif source not in declared:
            problem(f"compose.yaml: {name}: volume `{source}` is not declared under volumes:")
    for dependency in service.get("depends_on") or []:
        if dependency not in services:
            problem(f"compose.yaml: {name} depends on `{dependency}`, which is not a service")

if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"Dockerfile: stages {', '.join(sorted(stages))}; COPY sources present for {', '.join(targets)}")
print(f"compose.yaml: services {', '.join(services)}; every file it reads exists or is named in docs/install.md")
PY
if docker compose version >/dev/null 2>&1; then
  docker compose config --quiet && echo "docker compose config: valid"
else
  echo "SKIPPED docker compose config: the compose plugin is not installed here"
fi

#!/usr/bin/env bash
# Checks the relative links of the documentation: every `[text](path)` and `[text](path#anchor)`
# in README.md, CHANGELOG.md, docs/*.md and infra/**/*.md (or in the Markdown files given as
# arguments) must point to a file or directory that exists and, when it has an anchor into a
# Markdown file, to a heading of that file. Anchors follow GitHub's rules: the heading's text,
# lower-cased, with punctuation other than `-` and `_` dropped, spaces turned into `-`, and `-1`,
# `-2`, … added to repeated headings. Links with a scheme (https:, mailto:) are not fetched.
#
# Usage: scripts/check-doc-links.sh [FILE.md …]
# Exit: 0 all links resolve, 1 some do not (each printed as FILE:LINE: target: reason).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$#" -eq 0 ]; then
    set -- README.md CHANGELOG.md docs/*.md
    while IFS= read -r f; do set -- "$@" "$f"; done < <(find infra -name '*.md' | sort)
fi

exec python3 - "$@" <<'PY'
import os
import re
import sys
import unicodedata

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
ATX = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SETEXT = re.compile(r"^\s{0,3}(=+|-+)\s*$")
HTML_ID = re.compile(r"""<a\s[^>]*(?:name|id)\s*=\s*["']([^"']+)["']""", re.I)
# [text](target "title") and ![alt](target); text may hold one level of brackets ([`x`]).
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]*)(?:\s+\"[^\"]*\")?\s*\)")
REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
CODE_SPAN = re.compile(r"(`+)(.*?)\1")


def lines_outside_fences(path):
    """(line number, text) of every line that is not inside a fenced code block."""
    fence = None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            m = FENCE.match(line)
            if m:
                marker = m.group(1)
                if fence is None:
                    fence = marker[0] * len(marker)
                    continue
                if marker.startswith(fence):
                    fence = None
                    continue
            if fence is None:
                yield number, line


def slug(text):
    """GitHub's anchor for a heading text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = text.replace("`", "").replace("*", "")  # code and emphasis markers
    text = text.strip().lower()
    kept = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "-_ " or cat[0] in "LN" or cat == "Mn":
            kept.append(ch)
    return "".join(kept).replace(" ", "-")


_anchors = {}


def anchors(path):
    if path not in _anchors:
        found, counts, previous = set(), {}, ""
        for _, line in lines_outside_fences(path):
            heading = None
            m = ATX.match(line)
            if m:
                heading = m.group(2)
            elif SETEXT.match(line) and previous.strip() and not previous.lstrip().startswith("|"):
                heading = previous.strip()
            if heading is not None:
                base = slug(heading)
                n = counts.get(base, 0)
                counts[base] = n + 1
                found.add(base if n == 0 else f"{base}-{n}")
            for m in HTML_ID.finditer(line):
                found.add(m.group(1))
            previous = line
        _anchors[path] = found
    return _anchors[path]


def links(path):
    for number, line in lines_outside_fences(path):
        bare = CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)  # no links inside `code`
        for m in INLINE.finditer(bare):
            yield number, m.group(1)
        m = REFDEF.match(bare)
        if m:
            yield number, m.group(1)


problems = 0
checked = 0
for source in sys.argv[1:]:
    for number, target in links(source):
        target = target.strip("<>")
        if not target or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", target):
            continue  # https:, mailto: …: not ours to check
        checked += 1
        path, _, anchor = target.partition("#")
        if path:
            resolved = os.path.normpath(os.path.join(os.path.dirname(source), path))
        else:
            resolved = source
        reason = None
        if not os.path.exists(resolved):
            reason = f"no such file `{resolved}`"
        elif anchor and resolved.endswith(".md") and os.path.isfile(resolved):
            if anchor not in anchors(resolved):
                reason = f"no heading with anchor `#{anchor}` in `{resolved}`"
        if reason:
            problems += 1
            print(f"{source}:{number}: {target}: {reason}")

if problems:
    print(f"check-doc-links: {problems} broken link(s) out of {checked} checked", file=sys.stderr)
    sys.exit(1)
print(f"check-doc-links: {checked} relative link(s) in {len(sys.argv) - 1} file(s), all resolve",
      file=sys.stderr)
PY

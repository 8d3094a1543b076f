#!/usr/bin/env bash
# docs/operations.md documents every cqrsd option with the default config/cqrsd.conf ships:
# each option `cqrsd --long-help` lists outside CAF's own groups has a row in the configuration
# table whose default is the value in config/cqrsd.conf, the file sets (or, for db.url, shows
# commented out) every option, and neither names an option cqrsd does not have.
#
#   operations_doc_test.sh <cqrsd binary> <source dir>
set -euo pipefail

CQRSD=$(realpath "$1")
SOURCE_DIR=$2
DOC=$SOURCE_DIR/docs/operations.md
CONF=$SOURCE_DIR/config/cqrsd.conf

problems=0
problem() {
  echo "FAIL: $*" >&2
  problems=$((problems + 1))
}

# CAF 0.17's own option groups; every other group is cqrsd's.
caf_groups='^(global|logger|middleman|opencl|openssl|scheduler|stream|work-stealing)\.'
work=$(mktemp -d "${TMPDIR:-/tmp}/cqrs-doc-test.XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$work" && timeout 30 "$CQRSD" --long-help >"$work/help" 2>&1) ||
  problem "cqrsd --long-help failed: $(cat "$work/help")"
grep -o -- '--[a-z_-]*\.[a-z_-]*' "$work/help" | sed 's/^--//' | grep -Ev "$caf_groups" |
  sort -u >"$work/options"
(($(wc -l <"$work/options") >= 10)) || problem "found only $(wc -l <"$work/options") options"

# config/cqrsd.conf as "section.key<TAB>value" (value "-" for a commented-out key).
awk '
  /^\[/ { gsub(/[][]/, ""); section = $0; next }
  /^[a-z_]+[ \t]*=/ { split($0, kv, "="); key = kv[1]; gsub(/[ \t]/, "", key)
    value = substr($0, index($0, "=") + 1); sub(/[ \t]*;.*$/, "", value)
    gsub(/^[ \t]+|[ \t]+$/, "", value); gsub(/"/, "", value)
    print section "." key "\t" value; next }
  /^;[ \t]*[a-z_]+[ \t]*=/ { key = $0; sub(/^;[ \t]*/, "", key); sub(/[ \t]*=.*/, "", key)
    print section "." key "\t-" }
' "$CONF" >"$work/conf"

# The configuration table rows of docs/operations.md as "option<TAB>default column".
sed -n 's/^| `\([a-z_]*\.[a-z_]*\)` | \([^|]*\) |.*/\1\t\2/p' "$DOC" |
  sed 's/[[:space:]]*$//' >"$work/doc"

while read -r option; do
  doc_default=$(awk -F'\t' -v o="$option" '$1 == o {print $2}' "$work/doc")
  conf_value=$(awk -F'\t' -v o="$option" '$1 == o {print $2}' "$work/conf")
  [[ -n "$doc_default" ]] || problem "docs/operations.md has no row for $option"
  [[ -n "$conf_value" ]] || problem "config/cqrsd.conf does not mention $option"
  if [[ -n "$doc_default" && -n "$conf_value" && "$conf_value" != "-" &&
    "$doc_default" != "\`$conf_value\`" ]]; then
    problem "$option: docs/operations.md says $doc_default, config/cqrsd.conf says $conf_value"
  fi
done <"$work/options"

for listed in doc conf; do
  cut -f1 "$work/$listed" | while read -r option; do
    grep -qx "$option" "$work/options" || echo "$option"
  done >"$work/unknown-$listed"
done
while read -r option; do problem "docs/operations.md documents $option, which cqrsd lacks"; done \
  <"$work/unknown-doc"
while read -r option; do problem "config/cqrsd.conf sets $option, which cqrsd lacks"; done \
  <"$work/unknown-conf"

if ((problems > 0)); then
  exit 1
fi
echo "PASS: $(wc -l <"$work/options") options documented with their defaults"

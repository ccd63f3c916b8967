#!/usr/bin/env bash
# Builds the release `callplane` and the floor echo (benches/floor_echo.rs) once, into
# $CARGO_TARGET_DIR (default target/), and prints the floor's executable path. With SKIP_BUILD=1
# and a previous build, prints the path of that build. Used by bench-media.sh and bench-suite.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
floor_list="$target/release/floor_echo.path"
if [ "${SKIP_BUILD:-0}" != 1 ] || [ ! -s "$floor_list" ]; then
  mkdir -p "$target/release"
  # One release build of both: the softswitch and the floor (a harness = false bench target,
  # built with the release profile; cargo prints where its executable is).
  cargo build --release --locked --bin callplane --bench floor_echo --message-format=json \
    | python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "floor_echo" and m.get("executable"):
        print(m["executable"])
' >"$floor_list.tmp"
  mv "$floor_list.tmp" "$floor_list"
fi
floor=$(tail -n1 "$floor_list")
[ -x "$floor" ] || { echo "floor_echo binary not found ($floor)" >&2; exit 1; }
echo "$floor"

#!/usr/bin/env bash
# Builds and runs switch_check.c against Sources/CSpindle/switch.S, natively and, when the
# cross tools are installed (Debian: gcc-aarch64-linux-gnu, qemu-user), for aarch64 under
# qemu-user. Usage: Tests/ContextSwitchCheck/run.sh [--require-aarch64]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
src=("$here/switch_check.c" "$here/../../Sources/CSpindle/switch.S")

for opt in -O0 -O2; do
  echo "== $(uname -m), $opt"
  cc $opt -o "$out/native$opt" "${src[@]}" -lm
  "$out/native$opt"
done

if command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null; then
  for opt in -O0 -O2; do
    echo "== aarch64 (qemu-user), $opt"
    aarch64-linux-gnu-gcc $opt -static -o "$out/aarch64$opt" "${src[@]}" -lm
    qemu-aarch64 "$out/aarch64$opt"
  done
elif [ "${1:-}" = "--require-aarch64" ]; then
  echo "aarch64 cross tools missing: apt-get install gcc-aarch64-linux-gnu qemu-user" >&2
  exit 1
else
  echo "== aarch64 skipped (no aarch64-linux-gnu-gcc / qemu-aarch64)"
fi

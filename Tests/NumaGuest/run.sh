#!/usr/bin/env bash
# Runs spindle-numa-check (Tests/NumaGuest/Check) inside a two-node NUMA guest: a Debian kernel
# and a busybox initramfs under qemu-system-x86_64, with CPU 0 and 1 GiB on node 0 and CPU 1 and
# 1 GiB on node 1 (distance 21). docs/numa.md, "Verification".
#
# Needs (Debian packages): qemu-system-x86 linux-image-amd64 busybox-static cpio libnuma1.
# Uses KVM when /dev/kvm is usable, otherwise emulation (slower, same result);
# SPINDLE_GUEST_ACCEL=tcg skips the KVM attempt.
# Usage: Tests/NumaGuest/run.sh [--install]   (--install: apt-get the packages first, as root)
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "${1:-}" = "--install" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq qemu-system-x86 linux-image-amd64 busybox-static cpio libnuma1 >/dev/null
fi

kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -1 || true)
[ -n "$kernel" ] || { echo "no kernel in /boot: install linux-image-amd64" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || { echo "qemu-system-x86_64 missing: install qemu-system-x86" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "/bin/busybox missing: install busybox-static" >&2; exit 1; }

swift build -c release --product SpindleNumaCheck --static-swift-stdlib
binary=$(swift build -c release --product SpindleNumaCheck --static-swift-stdlib --show-bin-path)/SpindleNumaCheck

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,proc,sys,dev,tmp}
cp /bin/busybox "$root/bin/busybox"
cp "$binary" "$root/check"
# The binary's shared libraries (glibc and friends; the Swift runtime is linked in) and libnuma,
# which Spindle loads with dlopen.
libnuma=$(ls /usr/lib/x86_64-linux-gnu/libnuma.so.1 /lib/x86_64-linux-gnu/libnuma.so.1 2>/dev/null | head -1)
for library in $(ldd "$binary" | grep -o '/[^ ]*') "$libnuma"; do
  mkdir -p "$root/$(dirname "$library")"
  cp -L "$library" "$root/$library"
done
cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
echo "guest nodes online: $(/bin/busybox cat /sys/devices/system/node/online)"
for node in /sys/devices/system/node/node*; do
  echo "$(/bin/busybox basename $node): CPUs $(/bin/busybox cat $node/cpulist)"
done
/check
echo "numa-check exit status: $?"
/bin/busybox poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$root.cpio.gz"

log=$(mktemp)
boot() {
  # shellcheck disable=SC2086
  timeout "$2" qemu-system-x86_64 $1 -m 2048 -smp 2,sockets=2,cores=1,threads=1 \
    -object memory-backend-ram,size=1G,id=m0 -object memory-backend-ram,size=1G,id=m1 \
    -numa node,nodeid=0,cpus=0,memdev=m0 -numa node,nodeid=1,cpus=1,memdev=m1 \
    -numa dist,src=0,dst=1,val=21 \
    -kernel "$kernel" -initrd "$root.cpio.gz" -append "console=ttyS0 rdinit=/init quiet panic=-1" \
    -nographic -no-reboot 2>&1 | tee "$log"
}
# KVM when it works here (nested virtualisation may refuse), else emulation.
# (A guest boots in seconds under KVM and in about ten under emulation; nested KVM may hang.)
if ! { [ "${SPINDLE_GUEST_ACCEL:-}" != tcg ] && [ -w /dev/kvm ] && boot "-enable-kvm" 90 && grep -q "numa-check exit status" "$log"; }; then
  echo "(KVM unavailable, refused or stuck; emulating the guest)"
  boot "-accel tcg" 900
fi
rm -f "$root.cpio.gz"
grep -q "numa-check exit status: 0" "$log"

#!/bin/sh
# The test that runs inside the arm64 VM (busybox sh, as root), once per slate binary packed
# into the initramfs (/usr/local/bin/slate-aarch64, then /usr/local/bin/slate-armv7: a 32-bit
# userland on the 64-bit kernel, as on a Pi 4/5 running 32-bit Raspberry Pi OS).
# Images: /images/busybox-<arch>.tar, OCI archives made by cross/test-vm with umoci+skopeo.
# Its exit status becomes cross/test-vm's. Extend it here; keep one "ok"/"FAIL" line per check.
set -u

fails=0
ok()   { echo "ok   $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }

echo "== kernel $(uname -r), $(nproc) cpus"
ctrl=$(cat /sys/fs/cgroup/cgroup.controllers)
sub=$(cat /sys/fs/cgroup/cgroup.subtree_control)
for c in cpu memory pids; do
  case " $ctrl " in *" $c "*) ok "cgroup2 controller $c available" ;; *) fail "cgroup2 controller $c missing ($ctrl)" ;; esac
  case " $sub " in *" $c "*) ok "cgroup2 controller $c delegated" ;; *) fail "cgroup2 controller $c not in subtree_control ($sub)" ;; esac
done
grep -qw overlay /proc/filesystems && ok "overlay filesystem" || fail "no overlay in /proc/filesystems"

cgroups() { find /sys/fs/cgroup -mindepth 1 -type d | sort; }

for arch in aarch64 armv7; do
  slate=/usr/local/bin/slate-$arch
  [ -x "$slate" ] || continue
  echo "== $arch"
  if v=$("$slate" --version 2>&1); then ok "$arch: $v"; else fail "$arch: slate --version: $v"; continue; fi

  if ! "$slate" run --help >/dev/null 2>&1; then
    # `slate run` is not in this build yet: the smoke part above is all there is to do.
    echo "SKIP $arch: this slate has no 'run' command"
    continue
  fi

  root=/tmp/s-$arch
  before=$(cgroups)
  out=$("$slate" --root "$root" run --rm --memory 64m --pids-limit 32 \
        "oci-archive:/images/busybox-$arch.tar" \
        sh -c 'cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max; exit 3' 2>/tmp/err-$arch)
  rc=$?
  echo "$out" | sed 's/^/     | /'
  [ "$rc" -eq 3 ] && ok "$arch: exit status 3 propagated" || { fail "$arch: exit status $rc, want 3"; sed 's/^/     ! /' /tmp/err-$arch; }
  [ "$(echo "$out" | sed -n 1p)" = 67108864 ] && ok "$arch: memory.max 67108864 in the container" || fail "$arch: memory.max not 67108864"
  [ "$(echo "$out" | sed -n 2p)" = 32 ] && ok "$arch: pids.max 32 in the container" || fail "$arch: pids.max not 32"

  # Every run starts from a fresh rootfs: what one run wrote, the next does not see.
  "$slate" --root "$root" run --rm "oci-archive:/images/busybox-$arch.tar" \
    sh -c 'echo dirty > /hello.txt; echo x > /marker' >/dev/null 2>&1
  out=$("$slate" --root "$root" run --rm "oci-archive:/images/busybox-$arch.tar" \
        sh -c 'cat /hello.txt; ls /marker 2>&1' 2>/dev/null)
  case "$out" in
    "hello from slate's $arch test image"*"No such file"*) ok "$arch: second run sees a fresh rootfs" ;;
    *) fail "$arch: rootfs not fresh: $out" ;;
  esac

  # Nothing left behind: no mount under the store, no container cgroup (the shared, empty
  # `slate` parent stays, as docker's does: it is where the next run's cgroup goes), no run
  # directory, no process.
  left=$(grep " $root" /proc/self/mountinfo || true)
  [ -z "$left" ] && ok "$arch: no mounts left under $root" || fail "$arch: mounts left: $left"
  new=$(cgroups | grep -vxF "$before" | grep -vx /sys/fs/cgroup/slate || true)
  [ -z "$new" ] && ok "$arch: no container cgroup left" || fail "$arch: cgroups left: $new"
  runs=$(ls -A "$root/runs" 2>/dev/null || true)
  [ -z "$runs" ] && ok "$arch: no run directory left" || fail "$arch: runs left: $runs"
  procs=$(cat /proc/[0-9]*/comm 2>/dev/null | grep -c '^slate' || true)
  [ "$procs" = 0 ] && ok "$arch: no slate process left" || fail "$arch: $procs slate processes left"
done

echo "== $fails failure(s)"
[ "$fails" -eq 0 ]

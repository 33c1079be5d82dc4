# shellcheck shell=bash
# Issue 12 part 4: what a container sees at /sys/fs/cgroup under real units on pure cgroup v2.
# Sourced by test.sh, whose helpers (check, one_line) and $SLATE / $IMG it uses; one check,
# one line. No `$` in the container's commands: systemd expands it in a unit's ExecStart,
# systemd-run's included.

cg_files=(/sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max /sys/fs/cgroup/pids.max)
cg_unit=(-p Delegate=yes -p MemoryMax=200M -p CPUQuota=50% -p TasksMax=100)
# cg_run UNIT-PROPERTIES... -- SLATE-RUN-ARGS...: slate run --rm in a transient service.
cg_run() {
  local props=()
  while [ "$1" != -- ]; do props+=("$1"); shift; done
  shift
  systemd-run -q -P "${props[@]}" "$SLATE" run --rm -q "$@" 2>&1
}

out=$(cg_run "${cg_unit[@]}" -- "$IMG" cat "${cg_files[@]}")
check "cgview: the unit's MemoryMax=200M CPUQuota=50% TasksMax=100 read as the container's own memory.max, cpu.max, pids.max" \
  "got: $(echo "$out" | one_line)" test "$out" = $'209715200\n50000 100000\n100'

out=$(cg_run "${cg_unit[@]}" -- --memory 64m --cpus 0.25 --pids-limit 20 "$IMG" cat "${cg_files[@]}")
check "cgview: in that unit, --memory 64m --cpus 0.25 --pids-limit 20 read back as the container's own" \
  "got: $(echo "$out" | one_line)" test "$out" = $'67108864\n25000 100000\n20'

out=$(cg_run -p Delegate=yes -- "$IMG" cat /sys/fs/cgroup/memory.max)
check "cgview: with no MemoryMax= above it and no --memory, memory.max reads max" \
  "got: $(echo "$out" | one_line)" test "$out" = max

# Without any limit: the namespace's root is the container's cgroup, every delegated
# controller's files are there, and nothing lies below it (no sibling, parent or supervisor).
out=$(cg_run "${cg_unit[@]}" -- "$IMG" sh -c 'cat /proc/self/cgroup /sys/fs/cgroup/cgroup.controllers; busybox ls -d /sys/fs/cgroup/*/ 2>/dev/null; true')
cg_own() {
  [ "$(echo "$out" | sed -n 1p)" = "0::/" ] || return 1
  for c in memory cpu pids; do echo "$out" | sed -n 2p | grep -qw "$c" || return 1; done
  [ "$(echo "$out" | wc -l)" -eq 2 ]
}
check "cgview: /proc/self/cgroup is 0::/, memory cpu pids are in cgroup.controllers without limits, no other cgroup visible" \
  "got: $(echo "$out" | one_line)" cg_own

out=$(cg_run "${cg_unit[@]}" -- "$IMG" sh -c 'echo 5 > /sys/fs/cgroup/pids.max; busybox mkdir /sys/fs/cgroup/x; cat /sys/fs/cgroup/pids.max')
cg_ro() {
  [ "$(echo "$out" | grep -c 'Read-only file system')" -eq 2 ] && [ "$(echo "$out" | tail -1)" = 100 ]
}
check "cgview: /sys/fs/cgroup is read-only inside (a write and a mkdir fail with EROFS)" \
  "got: $(echo "$out" | one_line)" cg_ro

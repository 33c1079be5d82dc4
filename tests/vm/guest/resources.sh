# shellcheck shell=bash disable=SC2016  # the single-quoted scripts expand in the container
# Sourced by test.sh (its SLATE, IMG, check and one_line): docker's block I/O, cpuset and
# swap flags on pure cgroup v2 (issue 12 part 4), from the test's own Delegate=yes unit as a
# user's service would run them. Each value is read in the container's own cgroup, which is
# its /sys/fs/cgroup (cgroup namespace).

res_disk=/dev/vda
res_dev=$(cat /sys/block/vda/dev)
# cgroup_value NAME OUTPUT: the value the container printed as NAME=VALUE.
cgroup_value() { printf '%s\n' "$2" | sed -n "s/^$1=//p"; }
res_show='for f in cpuset.cpus cpuset.mems io.max memory.max memory.swap.max memory.low; do echo "$f=$(cat /sys/fs/cgroup/$f)"; done'

out=$("$SLATE" run --rm -q --cpuset-cpus 0 --cpuset-mems 0 \
  --device-write-bps "$res_disk:1mb" --device-read-iops "$res_disk:100" \
  --memory 64m --memory-swap 128m --memory-reservation 32m "$IMG" sh -c "$res_show" 2>&1)
res_why="got: $(echo "$out" | one_line)"
check "resources: --cpuset-cpus 0 --cpuset-mems 0 are cpuset.cpus/mems" "$res_why" \
  test "$(cgroup_value cpuset.cpus "$out")/$(cgroup_value cpuset.mems "$out")" = 0/0
io_max=$(cgroup_value io.max "$out")
check "resources: --device-write-bps $res_disk:1mb --device-read-iops $res_disk:100 are one io.max line ($io_max)" \
  "$res_why" sh -c 'case "$1" in "$2 "*wbps=1048576*riops=100*) exit 0 ;; *) exit 1 ;; esac' _ "$io_max" "$res_dev"
check "resources: --memory 64m --memory-swap 128m is memory.swap.max = 67108864" "$res_why" \
  test "$(cgroup_value memory.max "$out")/$(cgroup_value memory.swap.max "$out")" = 67108864/67108864
check "resources: --memory-reservation 32m is memory.low" "$res_why" \
  test "$(cgroup_value memory.low "$out")" = 33554432

out=$("$SLATE" run --rm -q --memory 64m --memory-swap 64m "$IMG" cat /sys/fs/cgroup/memory.swap.max 2>&1)
check "resources: --memory-swap equal to --memory is no swap (memory.swap.max = 0)" \
  "got: $(echo "$out" | one_line)" test "$out" = 0

# io.weight needs the io cost model or BFQ, which a kernel or disk may lack: then one clear
# line and status 125, never a silent no-op.
out=$("$SLATE" run --rm -q --blkio-weight 300 "$IMG" sh -c \
  'for f in io.bfq.weight io.weight; do [ -e /sys/fs/cgroup/$f ] && echo "$f=$(busybox head -n 1 /sys/fs/cgroup/$f)"; done; true' 2>&1)
rc=$?
bfq=$(cgroup_value io.bfq.weight "$out")
cost=$(cgroup_value io.weight "$out")
if [ "$rc" -eq 0 ] && [ -n "$bfq" ]; then
  echo "# blkio weight: this guest has BFQ (io.bfq.weight: $bfq)"
  check "resources: --blkio-weight 300 is io.bfq.weight 300" "got: $(echo "$out" | one_line)" \
    sh -c 'echo "$1" | grep -qw 300' _ "$bfq"
elif [ "$rc" -eq 0 ]; then
  echo "# blkio weight: this guest has the io cost model (io.weight: $cost)"
  check "resources: --blkio-weight 300 is io.weight 2930 (1 + (300-10)*9999/990)" \
    "got: $(echo "$out" | one_line)" sh -c 'echo "$1" | grep -qw 2930' _ "$cost"
else
  echo "# blkio weight: this guest cannot weight block I/O: $(echo "$out" | one_line)"
  check "resources: --blkio-weight 300 on a guest without io.weight is one clear line, status 125" \
    "status $rc, said: $(echo "$out" | one_line)" \
    sh -c '[ "$1" -eq 125 ] && [ "$(printf "%s\n" "$2" | grep -c .)" -eq 1 ] && echo "$2" | grep -q "cannot weight block I/O"' _ "$rc" "$out"
fi

# --- A cpuset the cgroups above do not allow: v2 would quietly run the container on the
# cpus they do allow; slate compares cpuset.cpus.effective and refuses. In a unit limited
# to cpu 1 (AllowedCPUs=1), cpu 1 is fine and cpu 0 is not.
in_cpu1() { systemd-run -q -P -p Delegate=yes -p AllowedCPUs=1 "$SLATE" run --rm -q "$@" 2>&1; }
out=$(in_cpu1 --cpuset-cpus 1 "$IMG" cat /sys/fs/cgroup/cpuset.cpus.effective)
check "resources: in a unit with AllowedCPUs=1, --cpuset-cpus 1 is in effect" \
  "got: $(echo "$out" | one_line)" test "$out" = 1
out=$(in_cpu1 --cpuset-cpus 0 "$IMG" true)
rc=$?
check "resources: in a unit with AllowedCPUs=1, --cpuset-cpus 0 is refused in one line, not narrowed (status $rc)" \
  "status $rc, said: $(echo "$out" | one_line)" \
  sh -c '[ "$1" -eq 125 ] && [ "$(printf "%s\n" "$2" | grep -c .)" -eq 1 ] && echo "$2" | grep -q "cpuset.cpus.effective"' _ "$rc" "$out"

# --- The clone3 fallback (kernels before 5.7, a seccomp filter that hides clone3), taken on
# purpose with SLATE_CLONE_INTO_CGROUP=0: the child is moved by a cgroup.procs write and its
# limits hold all the same.
out=$(SLATE_CLONE_INTO_CGROUP=0 "$SLATE" --log-level debug run --rm -q --pids-limit 7 "$IMG" cat /sys/fs/cgroup/pids.max 2>&1)
check "clone3 off (SLATE_CLONE_INTO_CGROUP=0): the child is moved by cgroup.procs, its pids.max is 7" \
  "got: $(echo "$out" | grep -e 'into its cgroup' -e clone3 -e '^7$' | one_line)" \
  sh -c 'echo "$1" | grep -q "moved into its cgroup (cgroup.procs)" && ! echo "$1" | grep -q "cloned into its cgroup" && echo "$1" | grep -qx 7' _ "$out"

# --- Start latency with and without CLONE_INTO_CGROUP: a figure, not a check. Interleaved
# runs of `slate run --rm IMG true`; median and minimum of each, in ms.
res_ms() { local a b; a=$(date +%s%N); "$@" >/dev/null 2>&1; b=$(date +%s%N); echo $(((b - a) / 1000000)); }
res_on=() res_off=()
for _ in $(seq 20); do
  res_on+=("$(res_ms "$SLATE" run --rm -q "$IMG" true)")
  res_off+=("$(res_ms env SLATE_CLONE_INTO_CGROUP=0 "$SLATE" run --rm -q "$IMG" true)")
done
res_stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {m = (NR % 2) ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2); printf "median %d ms, min %d ms", m, a[1]}'; }
echo "# start latency, 20 runs each, interleaved: clone3 into the cgroup $(res_stats "${res_on[@]}");" \
  "clone + cgroup.procs $(res_stats "${res_off[@]}")"

# slate-runc (issue 14) on a systemd host on pure cgroup v2, as containerd's shim and
# podman drive it there: create, start, exec, update, kill and delete of a bundle whose
# rootfs is the test image's, from the test's own Delegate=yes unit. The container's
# cgroup is read on the host side (its /proc/PID/cgroup), so the values are the ones the
# kernel enforces. Sourced by test.sh (ok/nok/check/wait_for/one_line, $SLATE, $IMG).

RUNC=/usr/local/bin/slate-runc
ln -sf slate "$RUNC"
oci_root=/run/slate-runc-test
oci_dir=$(mktemp -d /tmp/oci-bundle.XXXXXX)
# The rootfs: the test image's layers (the archive's gzip blobs; its JSON blobs are not tars).
mkdir -p "$oci_dir/bundle/rootfs" "$oci_dir/archive"
tar -xf "${IMG#oci-archive:}" -C "$oci_dir/archive"
for blob in "$oci_dir"/archive/blobs/sha256/*; do
  tar -xzf "$blob" -C "$oci_dir/bundle/rootfs" 2>/dev/null
done
mkdir -p "$oci_dir/bundle/rootfs/proc" "$oci_dir/bundle/rootfs/dev" "$oci_dir/bundle/rootfs/sys"
cat > "$oci_dir/bundle/config.json" <<'JSON'
{
  "ociVersion": "1.0.2",
  "process": {
    "user": {"uid": 0, "gid": 0},
    "args": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
    "env": ["PATH=/bin:/usr/bin"],
    "cwd": "/",
    "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]},
    "noNewPrivileges": true
  },
  "root": {"path": "rootfs"},
  "hostname": "oci-vm",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]}
  ],
  "linux": {
    "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "cgroup"}],
    "resources": {"memory": {"limit": 67108864}, "pids": {"limit": 32}}
  }
}
JSON
oci() { "$RUNC" --root "$oci_root" "$@"; }
oci_status() { oci state oci-vm 2>/dev/null | sed -n 's/.*"status": "\([a-z]*\)".*/\1/p'; }
oci_cg() { sed -n 's/^0:://p' "/proc/$1/cgroup"; }

# To a file, not a pipe: the created container inherits create's stdout and stderr (as it
# inherits the FIFOs a shim passes), and would hold a pipe open until it exits.
oci create --bundle "$oci_dir/bundle" oci-vm >"$oci_dir/create.out" 2>&1
create_out=$(cat "$oci_dir/create.out")
check "slate-runc: create on cgroup v2 leaves the container created" \
  "create said: $(echo "$create_out" | one_line); status $(oci_status)" test "$(oci_status)" = created
oci_pid=$(oci state oci-vm 2>/dev/null | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
oci start oci-vm >/dev/null 2>&1
wait_for 10 sh -c "\"$RUNC\" --root $oci_root state oci-vm | grep -q '\"running\"'"
cg=$(oci_cg "${oci_pid:-0}" 2>/dev/null)
cg_dir="/sys/fs/cgroup$cg"
check "slate-runc: start runs it in a cgroup of its own with the spec's limits ($cg)" \
  "status $(oci_status); memory.max $(cat "$cg_dir/memory.max" 2>&1); pids.max $(cat "$cg_dir/pids.max" 2>&1)" \
  test "$(oci_status)/$(cat "$cg_dir/memory.max" 2>/dev/null)/$(cat "$cg_dir/pids.max" 2>/dev/null)" = running/67108864/32
out=$(oci exec oci-vm busybox hostname 2>&1)
check "slate-runc: exec joins it" "got: $(echo "$out" | one_line)" test "$out" = oci-vm
oci update --memory 48m --pids-limit 20 oci-vm >/dev/null 2>&1
echo '{"cpu": {"quota": 50000, "period": 100000}}' | oci update --resources - oci-vm >/dev/null 2>&1
got="$(cat "$cg_dir/memory.max" 2>&1)/$(cat "$cg_dir/pids.max" 2>&1)/$(cat "$cg_dir/cpu.max" 2>&1)"
check "slate-runc: update (flags, then resources on stdin) changes memory.max, pids.max, cpu.max" \
  "got $got" test "$got" = "50331648/20/50000 100000"
oci kill oci-vm TERM >/dev/null 2>&1
wait_for 10 sh -c "\"$RUNC\" --root $oci_root state oci-vm | grep -q '\"stopped\"'"
oci delete oci-vm >/dev/null 2>&1
check "slate-runc: kill and delete leave no state and no cgroup" \
  "state: $(oci state oci-vm 2>&1 | one_line); cgroup dir ${cg_dir} $( [ -d "$cg_dir" ] && echo is left)" \
  sh -c "! \"$RUNC\" --root $oci_root state oci-vm >/dev/null 2>&1 && [ -n \"$cg\" ] && [ ! -d \"$cg_dir\" ]"
oci delete --force oci-vm >/dev/null 2>&1

# Start latency on pure v2 (issue 14), printed, not checked: `slate-runc run` of `true` on
# the same bundle, cloned into its cgroup (clone3 CLONE_INTO_CGROUP, the default) and the
# other way (a write to cgroup.procs after the clone, SLATE_CLONE_INTO_CGROUP=0), taking
# turns. Under TCG the absolute times are many times a board's; the two paths compare.
sed -i 's/"args": \[[^]]*\]/"args": ["true"]/' "$oci_dir/bundle/config.json"
bench_ns() { # env-assignment -> total ns of one run
  local t0 t1
  t0=$(date +%s%N)
  (cd "$oci_dir/bundle" && env "$1" "$RUNC" --root "$oci_root" run "bench-$$" >/dev/null 2>&1)
  t1=$(date +%s%N)
  echo $((t1 - t0))
}
clone3=(); procs=()
for _ in 1 2 3 4 5 6 7 8 9 10; do
  clone3+=("$(bench_ns SLATE_CLONE_INTO_CGROUP=1)")
  procs+=("$(bench_ns SLATE_CLONE_INTO_CGROUP=0)")
done
median_ms() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1e6}'; }
echo "# bench: slate-runc run of true on cgroup v2 under TCG, median of 10: clone3 into the cgroup $(median_ms "${clone3[@]}") ms, clone then cgroup.procs $(median_ms "${procs[@]}") ms"
oci delete --force "bench-$$" >/dev/null 2>&1
rm -rf "$oci_dir" "$oci_root" "$RUNC"

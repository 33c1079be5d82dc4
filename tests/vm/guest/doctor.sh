# shellcheck shell=bash
# `slate doctor` in the x86_64 test guest. Sourced by test.sh (it uses test.sh's SLATE, IMG,
# ok/nok/check/one_line and counters): at the end of a normal boot, and alone on a boot with
# `cgroup_disable=memory` (tests/vm/run --doctor-boot), where the guest is what Raspberry Pi
# OS is out of the box: no memory controller. Every line slate doctor prints goes into the
# test log prefixed with "# ".

# doctor_run LABEL CMD...: runs CMD (a slate doctor), keeps its stdout in $doc and its
# status in $doc_rc, and logs both.
doctor_run() {
  local label="$1"; shift
  doc=$("$@" 2>/tmp/doctor.err); doc_rc=$?
  echo "# --- slate doctor, $label (exit $doc_rc):"
  printf '%s\n' "$doc" | sed 's/^/# /'
  [ -s /tmp/doctor.err ] && sed 's/^/# stderr: /' /tmp/doctor.err
  return 0
}
# The table line of check NAME, its status, its fix.
doctor_line() { printf '%s\n' "$doc" | awk -v n="$1" '$2 == n'; }
doctor_status() { doctor_line "$1" | awk '{print $1}'; }
doctor_fix() { doctor_line "$1" | sed -n 's/.* -- fix: //p'; }
# doctor_has NAME STATUS TEXT...: the line of NAME has STATUS and contains every TEXT.
doctor_has() {
  local name="$1" status="$2" line; shift 2
  line=$(doctor_line "$name")
  [ "$(doctor_status "$name")" = "$status" ] || return 1
  for t in "$@"; do case "$line" in *"$t"*) ;; *) return 1 ;; esac; done
}
doctor_fails() { printf '%s\n' "$doc" | grep -c '^FAIL '; }
# Exit status 1 exactly when a check FAILs.
doctor_exit_follows_fails() {
  if [ "$(doctor_fails)" -gt 0 ]; then [ "$doc_rc" -eq 1 ]; else [ "$doc_rc" -eq 0 ]; fi
}
doctor_checks() { printf '%s\n' "$doc" | grep -cE '^(OK|WARN|FAIL) '; }

if grep -qw 'cgroup_disable=memory' /proc/cmdline; then
  # --- The Raspberry Pi OS case: the kernel boots with the memory controller disabled.
  echo "# /proc/cgroups memory line: $(awk '$1 == "memory"' /proc/cgroups | one_line)"
  doctor_run "booted with cgroup_disable=memory" "$SLATE" doctor
  check "doctor (cgroup_disable=memory): cgroup-memory is a WARN naming the boot switch and its fix" \
    "line: $(doctor_line cgroup-memory)" \
    doctor_has cgroup-memory WARN "--memory" "disabled at boot" "remove \`cgroup_disable=memory\`" "then reboot"
  check "doctor (cgroup_disable=memory): the other controllers are still there" \
    "cpu: $(doctor_line cgroup-cpu); pids: $(doctor_line cgroup-pids)" \
    sh -c '[ "$1" = OK ] && [ "$2" = OK ]' _ "$(doctor_status cgroup-cpu)" "$(doctor_status cgroup-pids)"
  check "doctor (cgroup_disable=memory): WARN alone exits 0 (exit $doc_rc, $(doctor_fails) FAIL)" \
    "$(printf '%s\n' "$doc" | grep '^FAIL ' | one_line)" \
    sh -c '[ "$1" -eq 0 ] && [ "$2" -eq 0 ]' _ "$doc_rc" "$(doctor_fails)"
  # The error of a run that needs the controller gives the fix doctor gives.
  fix=$(doctor_fix cgroup-memory)
  out=$("$SLATE" run --rm --memory 32m "$IMG" true 2>&1); rc=$?
  check "doctor (cgroup_disable=memory): slate run --memory fails (status $rc) with doctor's fix" \
    "status $rc, said: $(echo "$out" | one_line); doctor's fix: $fix" \
    sh -c '[ "$1" -eq 125 ] && [ -n "$3" ] && case "$2" in *"$3"*) true ;; *) false ;; esac' _ "$rc" "$out" "$fix"
else
  # --- A normal boot: systemd on pure cgroup v2, this script in a Delegate=yes service.
  doctor_run "in the test's Delegate=yes unit" "$SLATE" doctor
  check "doctor: exit status $doc_rc follows its $(doctor_fails) FAIL line(s)" \
    "$(printf '%s\n' "$doc" | grep '^FAIL ' | one_line)" doctor_exit_follows_fails
  check "doctor: reports cgroup v2 at /sys/fs/cgroup" "line: $(doctor_line cgroup-mode)" \
    doctor_has cgroup-mode OK "cgroup v2 (unified) at /sys/fs/cgroup"
  check "doctor: reports systemd and the delegated unit it runs in" "line: $(doctor_line systemd)" \
    doctor_has systemd OK "slate-vm-test.service" "Delegate=yes"
  # Each controller as the unit's own cgroup offers it (slate nests containers there).
  unit=$(sed -n 's/^0:://p' /proc/self/cgroup | sed 's/\(\.service\).*/\1/')
  offered=$(cat "/sys/fs/cgroup$unit/cgroup.controllers" 2>/dev/null)
  wrong=""
  for c in cpu cpuset memory pids io; do
    want=WARN
    case " $offered " in *" $c "*) want=OK ;; esac
    [ "$(doctor_status "cgroup-$c")" = "$want" ] || wrong="$wrong cgroup-$c: $(doctor_line "cgroup-$c") (want $want);"
  done
  check "doctor: each controller as $unit's cgroup.controllers offers it ($offered)" \
    "${wrong:-}" test -z "$wrong"
  check "doctor: the kernel loads slate's v2 device filter" "line: $(doctor_line devices)" \
    doctor_has devices OK "BPF_PROG_TYPE_CGROUP_DEVICE"
  check "doctor: seccomp, overlayfs on the store, state dir on a tmpfs" \
    "$(doctor_line seccomp | cut -c1-80); $(doctor_line overlayfs | cut -c1-80); $(doctor_line state-dir | cut -c1-80)" \
    sh -c '[ "$1$2$3" = OKOKOK ]' _ "$(doctor_status seccomp)" "$(doctor_status overlayfs)" "$(doctor_status state-dir)"
  n=$(doctor_checks)
  json=$("$SLATE" doctor --format json 2>/dev/null); json_rc=$?
  objects=$(printf '%s\n' "$json" | grep -c '"status": "\(OK\|WARN\|FAIL\)"')
  json_fail=$(printf '%s\n' "$json" | sed -n 's/^  "fail": \([0-9]*\).*/\1/p')
  check "doctor --format json: $objects checks like the table's $n, fail count ${json_fail:-?}, exit $json_rc" \
    "$(printf '%s\n' "$json" | head -c 300 | one_line)" \
    sh -c '[ "$1" -eq "$2" ] && [ "$3" = "$4" ] && [ "$5" -eq "$6" ]' _ \
    "$objects" "$n" "${json_fail:-x}" "$(doctor_fails)" "$json_rc" "$doc_rc"

  # A service without Delegate=yes: doctor says so, and how to fix it.
  doctor_run "in a unit without Delegate=yes" systemd-run -q -P "$SLATE" doctor --offline
  check "doctor: a unit without Delegate=yes is a WARN with the fix" "line: $(doctor_line systemd)" \
    doctor_has systemd WARN "Delegate=no" "add \`Delegate=yes\`"

  # A store on FAT (an SD card or USB stick as it comes): no run can use it.
  fat_mnt=/mnt/doctor-fat
  modprobe -q loop 2>/dev/null; modprobe -q vfat 2>/dev/null
  mkdir -p "$fat_mnt"
  if cp /images/fat.img /tmp/fat.img && mount -o loop /tmp/fat.img "$fat_mnt"; then
    doctor_run "with the store on a FAT stick" "$SLATE" --root "$fat_mnt/slate" doctor --offline
    fat_refused() { [ "$doc_rc" -eq 1 ] && doctor_has store-fs FAIL "on vfat" "fix: put the store on ext4"; }
    check "doctor: a store on vfat FAILs store-fs and exits 1 (exit $doc_rc)" \
      "line: $(doctor_line store-fs)" fat_refused
    umount "$fat_mnt"
  else
    nok "doctor: a store on vfat FAILs store-fs" "cannot loop-mount the FAT image: $(dmesg | tail -2 | one_line)"
  fi
  rm -f /tmp/fat.img
fi

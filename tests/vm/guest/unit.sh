# shellcheck shell=bash
# `slate systemd unit` under real systemd (issue 12, part 5): sourced by test.sh, whose helpers
# (ok, nok, check, wait_for, now, since, one_line), counters, $SLATE and $IMG it uses. One
# `ok`/`not ok` line per check; `#` lines are information for the log.
#
# A generated unit is installed, verified by systemd-analyze, started (Type=notify), serves a
# page, stops within TimeoutStopSec with the container gone, and restarts; arguments full of
# systemd's special characters reach the app word for word through systemd's own parser; and a
# unit without delegation gets what slate says it gets (a warning, or a refusal of limits).

unit_file=/etc/systemd/system/slate-web.service
page="hello from a slate unit"
mkdir -p /srv/web && echo "$page" > /srv/web/index.html
get_page() { busybox wget -qO- http://127.0.0.1:8080/ 2>/dev/null; }
serves() { [ "$(get_page)" = "$page" ]; }
web_inv() { systemctl show -p InvocationID --value slate-web.service; }
journal_of() { journalctl -q --no-pager -o cat "_SYSTEMD_INVOCATION_ID=$1" 2>/dev/null; }

# --- Install. busybox httpd as the container's PID 1 would ignore TERM (the kernel protects a
# namespace's init from signals it has no handler for), so --init runs it as PID 2.
out=$("$SLATE" systemd unit --install --name web --init -v /srv/web:/www:ro \
  "$IMG" busybox httpd -f -p 8080 -h /www 2>&1)
rc=$?
if [ "$rc" -eq 0 ] && echo "$out" | grep -qx "wrote $unit_file" && echo "$out" | grep -qx "ran systemctl daemon-reload"; then
  ok "systemd unit --install writes $unit_file and runs systemctl daemon-reload"
else
  nok "systemd unit --install writes the unit and runs daemon-reload" "status $rc, said: $(echo "$out" | one_line)"
fi
sed 's/^/#   /' "$unit_file"
out=$(systemd-analyze verify "$unit_file" 2>&1)
rc=$?
check "systemd-analyze verify of slate-web.service is clean" "status $rc: $(echo "$out" | one_line)" \
  test "$rc" -eq 0 -a -z "$out"

# --- Start: Type=notify returns once slate said READY=1; MainPID is slate run itself.
t=$(now)
systemctl start slate-web.service
rc=$?
dt=$(since "$t")
inv=$(web_inv)
main=$(systemctl show -p MainPID --value slate-web.service)
main_cmd=$(tr '\0' ' ' < "/proc/$main/cmdline" 2>/dev/null)
if [ "$rc" -eq 0 ] && [ "$(systemctl is-active slate-web.service)" = active ]; then
  ok "web: systemctl start returns with the unit active (Type=notify, $dt s)"
else
  nok "web: systemctl start returns with the unit active" \
    "status $rc, $(systemctl is-active slate-web.service); log: $(journalctl -q --no-pager -u slate-web.service | tail -5 | one_line)"
fi
case "$main_cmd" in
  "$SLATE run --rm --replace --name web "*) ok "web: MainPID $main is the unit's slate run" ;;
  *) nok "web: MainPID is the unit's slate run" "MainPID $main: ${main_cmd:-gone}" ;;
esac
check "web: busybox wget gets the page from the container" "got: $(get_page | one_line)" \
  wait_for 20 serves
check "web: slate ps shows the unit's container" "$("$SLATE" ps 2>&1 | one_line)" \
  sh -c "'$SLATE' ps | grep -qw web"

# --- Stop: ExecStop's slate stop (TERM to the app through --init), within TimeoutStopSec.
stop_limit=$(systemctl show -p TimeoutStopUSec --value slate-web.service)
t=$(now)
systemctl stop slate-web.service
dt=$(since "$t")
res=$(systemctl show -p Result --value slate-web.service)
exec_stop=$(systemctl show -p ExecStop --value slate-web.service)
left_procs=$(pgrep -a -f 'httpd -f -p 8080' | one_line)
left_rec=$("$SLATE" ps -a 2>&1 | grep -w web | one_line)
unit_cg=/sys/fs/cgroup/system.slice/slate-web.service
if [ "$res" = success ] && [ -z "$left_procs" ] && [ -z "$left_rec" ] && [ ! -d "$unit_cg" ] \
  && awk -v d="$dt" 'BEGIN { exit !(d < 30) }' && echo "$exec_stop" | grep -q 'status=0/0'; then
  ok "web: systemctl stop ends it in $dt s (TimeoutStopSec $stop_limit), result success, container gone"
else
  nok "web: systemctl stop ends it cleanly within TimeoutStopSec ($stop_limit)" \
    "took $dt s, result $res, ExecStop: $exec_stop; left: processes ${left_procs:-none}, record ${left_rec:-none}, cgroup $([ -d "$unit_cg" ] && echo "$unit_cg" || echo none); log: $(journal_of "$inv" | tail -4 | one_line)"
fi
check "web: nothing serves after the stop" "still got: $(get_page | one_line)" sh -c '! busybox wget -qO- http://127.0.0.1:8080/ >/dev/null 2>&1'

# --- Restart: a new invocation serves again.
systemctl start slate-web.service
inv1=$(web_inv)
wait_for 20 serves
systemctl restart slate-web.service
inv2=$(web_inv)
if [ "$inv1" != "$inv2" ] && [ "$(systemctl is-active slate-web.service)" = active ] && wait_for 20 serves; then
  ok "web: systemctl restart serves the page again from a new run"
else
  nok "web: systemctl restart serves again" \
    "$(systemctl is-active slate-web.service), invocations $inv1 / $inv2, page: $(get_page | one_line); log: $(journal_of "$inv2" | tail -4 | one_line)"
fi
systemctl stop slate-web.service

# --- Words through systemd's own parser: the app prints each argument it got.
words=("a b" "" "100%" "%n" "\$HOME" "\${HOME}" "it's" "q\"uote" "back\\slash" ";" "#hash" "--rm" "tab	x" "é")
# shellcheck disable=SC2016  # the app's shell expands $a
out=$("$SLATE" systemd unit --install --name argv --restart no \
  "$IMG" sh -c 'for a; do echo "<$a>"; done' argv0 "${words[@]}" 2>&1)
rc=$?
va=$(systemd-analyze verify /etc/systemd/system/slate-argv.service 2>&1)
va_rc=$?
systemctl start slate-argv.service
inv=$(systemctl show -p InvocationID --value slate-argv.service)
wait_for 30 sh -c '! systemctl is-active -q slate-argv.service'
want=$(printf '<%s>\n' "${words[@]}")
argv_got() { got=$(journal_of "$inv" | grep '^<'); [ "$got" = "$want" ]; }
wait_for 10 argv_got
if [ "$rc" -eq 0 ] && [ "$va_rc" -eq 0 ] && [ -z "$va" ] && [ "$got" = "$want" ]; then
  ok "argv: ${#words[@]} arguments with \$, %, quotes, backslash, ;, # and blanks reach the app word for word"
else
  nok "argv: arguments reach the app word for word through systemd" \
    "install $rc, verify $va_rc ($(echo "$va" | one_line)); got: $(echo "$got" | one_line); want: $(echo "$want" | one_line)"
fi
grep '^ExecStart=' -A3 /etc/systemd/system/slate-argv.service | sed 's/^/#   /'

# --- Without Delegate=yes (a drop-in turns it off): what slate says it does.
mkdir -p /etc/systemd/system/slate-web.service.d
printf '[Service]\nDelegate=no\n' > /etc/systemd/system/slate-web.service.d/no-delegate.conf
systemctl daemon-reload
systemctl start slate-web.service
inv=$(web_inv)
if [ "$(systemctl is-active slate-web.service)" = active ] && wait_for 20 serves \
  && journal_of "$inv" | grep -q 'without Delegate=yes' && ! journal_of "$inv" | grep -q $'\e'; then
  ok "no Delegate=: the container runs and serves, with a warning (no colour codes) that says add Delegate=yes"
else
  nok "no Delegate=: runs with a warning" \
    "$(systemctl is-active slate-web.service), page: $(get_page | one_line); log: $(journal_of "$inv" | tail -4 | one_line)"
fi
journal_of "$inv" | grep 'Delegate' | sed 's/^/#   /'
systemctl stop slate-web.service
rm -r /etc/systemd/system/slate-web.service.d

"$SLATE" systemd unit --install --name lim --restart no --memory 32m "$IMG" sleep 100 >/dev/null 2>&1
mkdir -p /etc/systemd/system/slate-lim.service.d
printf '[Service]\nDelegate=no\n' > /etc/systemd/system/slate-lim.service.d/no-delegate.conf
systemctl daemon-reload
systemctl start slate-lim.service 2>/dev/null
inv=$(systemctl show -p InvocationID --value slate-lim.service)
lim_log=$(journal_of "$inv")
lim_status=$(systemctl show -p ExecMainStatus --value slate-lim.service)
if [ "$(systemctl is-active slate-lim.service)" != active ] && [ "$lim_status" = 125 ] \
  && [ "$(echo "$lim_log" | grep -c '^slate: ')" = 1 ] && echo "$lim_log" | grep '^slate: ' | grep -q 'Delegate=yes'; then
  ok "no Delegate= with --memory: the start fails (status 125) with one line that says add Delegate=yes"
else
  nok "no Delegate= with --memory: refused with one line" \
    "$(systemctl is-active slate-lim.service), status ${lim_status:-?}; log: $(echo "$lim_log" | one_line)"
fi
echo "$lim_log" | grep '^slate: ' | sed 's/^/#   /'
systemctl reset-failed slate-lim.service 2>/dev/null

# Why limits are refused there: a process of a unit without delegation enables the memory
# controller for a sub-cgroup of its own, then systemd realizes the unit again.
cat > /run/slate-fight.sh <<'EOF'
cg=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)
mkdir "$cg/sub" && echo $$ > "$cg/sub/cgroup.procs" && echo +memory > "$cg/cgroup.subtree_control"
exec sleep 300
EOF
systemd-run -q --unit slate-fight sh /run/slate-fight.sh
fight_cg=/sys/fs/cgroup/system.slice/slate-fight.service
wait_for 10 test -e "$fight_cg/sub/memory.max"
before=$(one_line < "$fight_cg/cgroup.subtree_control" 2>/dev/null)
systemctl daemon-reload
systemctl set-property --runtime slate-fight.service CPUWeight=50
sleep 1
after=$(one_line < "$fight_cg/cgroup.subtree_control" 2>/dev/null)
echo "# without delegation, the unit's subtree_control: '$before' before, '$after' after daemon-reload + set-property (memory.max in the sub-cgroup: $([ -e "$fight_cg/sub/memory.max" ] && echo still there || echo gone))"
systemctl stop slate-fight.service 2>/dev/null
rm -f /run/slate-fight.sh

# --- The image's stop signal: an image with StopSignal SIGUSR1 gets USR1 from systemctl stop
# (ExecStop's slate stop sends the image's signal), not systemd's TERM.
"$SLATE" systemd unit --install --name sig oci-archive:/images/stopsig.tar \
  sh -c 'trap "echo got USR1; exit 0" USR1; trap "echo got TERM; exit 0" TERM; echo started; while :; do sleep 1; done' >/dev/null 2>&1
systemctl start slate-sig.service
sig_inv=$(systemctl show -p InvocationID --value slate-sig.service)
wait_for 30 sh -c "journalctl -q --no-pager -o cat _SYSTEMD_INVOCATION_ID=$sig_inv | grep -qx started"
t=$(now)
systemctl stop slate-sig.service
dt=$(since "$t")
sig_log=$(journal_of "$sig_inv" | grep -e '^got ' | one_line)
sig_res=$(systemctl show -p Result --value slate-sig.service)
check "sig: systemctl stop delivers the image's StopSignal (SIGUSR1) and ends in $dt s" \
  "app said: ${sig_log:-nothing}, result $sig_res" \
  test "$sig_log" = "got USR1" -a "$sig_res" = success
systemctl disable -q slate-sig.service 2>/dev/null
rm -f /etc/systemd/system/slate-sig.service
systemctl daemon-reload

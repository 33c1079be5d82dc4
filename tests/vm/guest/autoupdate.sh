# shellcheck shell=bash
# `slate auto-update` of a unit under real systemd (issue 13): sourced by test.sh, whose helpers
# (ok, nok, check, wait_for, now, since, one_line), counters and $SLATE it uses.
#
# A registry in the guest (Debian's docker-registry on 127.0.0.1:5000) serves au/web:latest;
# "pushing" a release is a real push through the registry API with curl (tests/vm/run prepared
# v1, v2 and a broken v3 as an OCI layout under /images/au, with the order of blobs to push).
# The unit comes from `slate systemd unit --auto-update`, the app is busybox httpd serving
# "release vN". While the updates run, a loop polls the page every 0.1 s: the time to the new
# release and the outage window are printed as `#` lines.

AU=/images/au
REG=http://127.0.0.1:5000
ref=127.0.0.1:5000/au/web:latest
au_unit=slate-auweb.service

# push VERSION: the release becomes au/web:latest in the guest's registry.
push() {
  local kind d mt loc sep f
  while read -r kind d mt; do
    f="$AU/blobs/sha256/${d#sha256:}"
    if [ "$kind" = blob ]; then
      curl -fsS -o /dev/null -I "$REG/v2/au/web/blobs/$d" 2>/dev/null && continue
      loc=$(curl -fsS -X POST -D - -o /dev/null "$REG/v2/au/web/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
      case "$loc" in http*) ;; *) loc="$REG$loc" ;; esac
      case "$loc" in *\?*) sep='&' ;; *) sep='?' ;; esac
      curl -fsS -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$f" "$loc${sep}digest=$d" >/dev/null || return 1
    else
      curl -fsS -X PUT -H "Content-Type: $mt" --data-binary "@$f" "$REG/v2/au/web/manifests/latest" >/dev/null || return 1
    fi
  done < "$AU/$1.push"
}
page() { curl -fsS --max-time 2 http://127.0.0.1:8081/ 2>/dev/null; }
serving() { [ "$(page)" = "release $1" ]; }
digest_of() { sed -n 's/^manifest \([^ ]*\) .*/\1/p' "$AU/$1.push"; }
running_digest() { "$SLATE" inspect auweb 2>/dev/null | sed -n 's/^ *"image_digest": *"\([^"]*\)".*/\1/p'; }

# A poller in the background: one line per 0.1 s, "<epoch> <page or ->".
poll_start() {
  poll_log=$(mktemp)
  ( while :; do printf '%s %s\n' "$(date +%s.%N)" "$(page || echo -)"; sleep 0.1; done ) > "$poll_log" 2>/dev/null &
  poll_pid=$!
}
poll_stop() { kill "$poll_pid" 2>/dev/null; wait "$poll_pid" 2>/dev/null; }
# poll_report T0 NEW: seconds from T0 to the first answer of release NEW, and the longest run
# of failed polls (the outage window) after T0.
poll_report() {
  awk -v t0="$1" -v want="release $2" '
    $1 < t0 { next }
    { line = $0; sub(/^[^ ]* /, "", line) }
    line == want && !first { first = $1 - t0 }
    line == "-" { if (!down) down = $1; next }
    down { gap = $1 - down; if (gap > max) max = gap; down = 0 }
    END { printf "%.2f %.2f\n", first, max }' "$poll_log"
}

# --- The guest's registry, in a transient unit (stopped below to play "registry down").
mkdir -p /var/lib/au-registry
cat > /run/au-registry.yml <<'EOF'
version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/au-registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
  secret: slate-vm
EOF
systemd-run -q --unit au-registry /usr/bin/docker-registry serve /run/au-registry.yml
wait_for 30 curl -fsS -o /dev/null "$REG/v2/"
check "auto-update: the guest's registry answers and takes v1" "push failed: $(curl -sS "$REG/v2/" 2>&1 | one_line)" push v1

# --- The unit, labelled; its timer written and started.
# A health check too: auto-update counts the new release up once it is healthy.
out=$("$SLATE" systemd unit --install --now --auto-update --name auweb --init \
  --health-cmd 'busybox wget -qO- http://127.0.0.1:8081/' --health-interval 1s "$ref" 2>&1)
rc=$?
timer_ok() {
  [ -f /etc/systemd/system/slate-auto-update.timer ] && [ -f /etc/systemd/system/slate-auto-update.service ] \
    && systemctl is-active -q slate-auto-update.timer \
    && [ -z "$(systemd-analyze verify /etc/systemd/system/slate-auto-update.service /etc/systemd/system/slate-auto-update.timer 2>&1)" ]
}
check "auto-update: systemd unit --install --now --auto-update writes and starts slate-auto-update.timer" \
  "status $rc, said: $(echo "$out" | one_line); timer $(systemctl is-active slate-auto-update.timer); verify: $(systemd-analyze verify /etc/systemd/system/slate-auto-update.* 2>&1 | one_line)" \
  timer_ok
echo "# next run: $(systemctl show -p NextElapseUSecRealtime --value slate-auto-update.timer)"
check "auto-update: the unit serves v1" "page: $(page | one_line); unit $(systemctl is-active "$au_unit")" \
  wait_for 60 serving v1
"$SLATE" exec auweb sh -c 'echo x > /written-by-v1'
out=$("$SLATE" auto-update --grace 5 2>&1)
rc=$?
check "auto-update: nothing new -> unchanged, exit 0" "status $rc: $(echo "$out" | one_line)" \
  sh -c "[ $rc -eq 0 ] && echo \"\$1\" | grep -q ' unchanged '" _ "$out"

# --- v2 pushed: --dry-run says so and changes nothing; auto-update deploys it.
push v2
main_before=$(systemctl show -p MainPID --value "$au_unit")
out=$("$SLATE" auto-update --dry-run 2>&1)
rc=$?
if [ "$rc" -eq 0 ] && echo "$out" | grep -q 'would update' && serving v1 \
  && [ "$(systemctl show -p MainPID --value "$au_unit")" = "$main_before" ] && [ "$(running_digest)" = "$(digest_of v1)" ]; then
  ok "auto-update --dry-run lists the update and changes nothing"
else
  nok "auto-update --dry-run lists the update and changes nothing" "status $rc: $(echo "$out" | one_line); page $(page)"
fi
poll_start
t0=$(date +%s.%N)
out=$("$SLATE" auto-update --grace 5 --format json 2>&1)
rc=$?
dt=$(since "$t0")
if [ "$rc" -eq 0 ] && echo "$out" | grep -q '"status": "updated"' && serving v2 && [ "$(running_digest)" = "$(digest_of v2)" ]; then
  ok "auto-update: the unit serves v2, healthy ($dt s)"
else
  nok "auto-update: the unit serves v2" "status $rc: $(echo "$out" | one_line); page $(page | one_line)"
fi
sleep 1
read -r first gap < <(poll_report "$t0" v2)
echo "# v1 -> v2: first v2 answer ${first} s after auto-update started; longest outage ${gap} s (polled every 0.1 s)"
ps_line=$("$SLATE" ps 2>&1 | grep -w auweb)
check "health: the unit's container shows (healthy) in slate ps" "ps: $ps_line" \
  sh -c "echo \"\$1\" | grep -q '(healthy)'" _ "$ps_line"
fresh=$("$SLATE" exec auweb sh -c 'test -e /written-by-v1 && echo stale || echo fresh' 2>&1)
check "auto-update: v2 runs on a fresh rootfs" "exec said: $fresh" test "$fresh" = fresh

# --- A broken v3 (exits 1 at start): the timer's service rolls back, logs it to the journal.
push v3
mkdir -p /etc/systemd/system/slate-auto-update.service.d
exec_line=$(sed -n 's/^ExecStart=//p' /etc/systemd/system/slate-auto-update.service)
printf '[Service]\nExecStart=\nExecStart=%s --grace 5\n' "$exec_line" > /etc/systemd/system/slate-auto-update.service.d/grace.conf
systemctl daemon-reload
t0=$(date +%s.%N)
systemctl start slate-auto-update.service
rc=$?
dt=$(since "$t0")
au_inv=$(systemctl show -p InvocationID --value slate-auto-update.service)
au_log=$(journalctl -q --no-pager -o cat "_SYSTEMD_INVOCATION_ID=$au_inv" 2>/dev/null)
res=$(systemctl show -p Result --value slate-auto-update.service)
if [ "$rc" -ne 0 ] && [ "$res" = exit-code ] && echo "$au_log" | grep -q 'rolled back' \
  && wait_for 30 serving v2 && [ "$(running_digest)" = "$(digest_of v2)" ]; then
  ok "auto-update (the timer's service): broken v3 rolled back to v2, reported in the journal, v2 serving ($dt s)"
else
  nok "auto-update: broken v3 rolled back to v2" "start status $rc, result $res, page $(page | one_line); journal: $(echo "$au_log" | one_line)"
fi
echo "$au_log" | grep -e 'rolled back' | head -2 | sed 's/^/#   /'
read -r first gap < <(poll_report "$t0" v2)
echo "# v2 -> v3 -> v2: longest outage ${gap} s while v3 failed and v2 came back"
out=$("$SLATE" auto-update --grace 5 2>&1)
rc=$?
if [ "$rc" -eq 0 ] && echo "$out" | grep -q 'was rolled back' && serving v2; then
  ok "auto-update: the rolled-back v3 is not taken again while the registry serves it"
else
  nok "auto-update: the rolled-back v3 is not taken again" "status $rc: $(echo "$out" | one_line); page $(page | one_line)"
fi
# The unit's own restart (--pull always) does not take v3 either.
systemctl restart "$au_unit"
check "auto-update: a plain restart of the unit stays on v2 (v3 is marked rolled back)" \
  "page $(page | one_line), runs $(running_digest)" wait_for 30 serving v2
# The publisher deletes the bad release (the tag answers 404 now): the unit's --pull always
# start runs the release the rollback put back instead of failing.
curl -fsS -X DELETE "$REG/v2/au/web/manifests/$(digest_of v3)" >/dev/null
systemctl restart "$au_unit"
check "auto-update: with the tag deleted (404), a restart runs the v2 the rollback put back" \
  "unit $(systemctl is-active "$au_unit"), page $(page | one_line); log: $(journalctl -q --no-pager -u "$au_unit" | grep -i -e 'rolled back' -e 'cannot' | tail -2 | one_line)" \
  wait_for 30 serving v2
poll_stop

# --- Registry down: nothing changes, one clear line, exit 1.
systemctl stop au-registry
main_before=$(systemctl show -p MainPID --value "$au_unit")
out=$("$SLATE" auto-update --grace 5 2>&1)
rc=$?
if [ "$rc" -eq 1 ] && echo "$out" | grep -q 'nothing changed' && serving v2 \
  && [ "$(systemctl show -p MainPID --value "$au_unit")" = "$main_before" ]; then
  ok "auto-update with the registry stopped: nothing changes, exit 1, a clear line"
else
  nok "auto-update with the registry stopped: nothing changes" "status $rc: $(echo "$out" | one_line); page $(page | one_line)"
fi
echo "$out" | grep -m1 'nothing changed' | cut -c1-200 | sed 's/^/#   /'

# --- Clean up: the unit, the timer and the registry.
systemctl disable -q --now slate-auto-update.timer "$au_unit" 2>/dev/null
rm -rf /etc/systemd/system/slate-auto-update.* "/etc/systemd/system/$au_unit"
systemctl daemon-reload
rm -f "$poll_log"

# Networks (issue 15) on a systemd host on pure cgroup v2: bridge with -p, a unit that
# publishes a port and is killed with SIGKILL (the next start sweeps its veth, lease and
# rules and gets the port again), and two containers of a user network by name.
# Sourced by test.sh (ok/nok/check/wait_for/one_line, $SLATE, $IMG). The guest's network is
# the VM's own: nothing here reaches the machine that runs the VM.

http_get() { curl -s -m 5 "http://127.0.0.1:$1/hostname"; }
veths() { ip -o link show type veth 2>/dev/null | wc -l; }
leases() { find /run/slate/networks/leases -type f -regex '.*/[0-9.]*' 2>/dev/null | wc -l; }

t=$(now)
id=$("$SLATE" run -d -q --name web -p 18080:80 "$IMG" busybox httpd -f -p 80 -h /etc 2>&1)
got=""
wait_for 30 sh -c 'http_get() { curl -s -m 5 "http://127.0.0.1:$1/hostname"; }; [ -n "$(http_get 18080)" ]'
got=$(http_get 18080)
check "network: run -d -p 18080:80 answers on the host's port 18080 ($(since "$t") s)" \
  "run said: $(echo "$id" | one_line); GET said: ${got:-nothing}" \
  test "$got" = "${id:0:12}"
dup=$("$SLATE" run --rm -q -p 18080:80 "$IMG" true 2>&1)
dup_rc=$?
check "network: a second -p 18080 fails at run with a clear error (status $dup_rc)" \
  "said: $(echo "$dup" | one_line)" \
  sh -c "[ $dup_rc -eq 125 ] && echo \"\$1\" | grep -q 'already in use'" _ "$dup"
"$SLATE" rm -f web >/dev/null 2>&1
check "network: rm -f leaves no veth and no lease" "veths $(veths), leases $(leases)" \
  test "$(veths)" -eq 0 -a "$(leases)" -eq 0

# A unit that publishes a port, killed hard: systemd restarts it, and the new start gets the
# port, a veth and a lease again, with the dead run's swept.
"$SLATE" systemd unit --install --now --name webu -p 18081:80 "$IMG" busybox httpd -f -p 80 -h /etc >/dev/null 2>&1
wait_for 60 sh -c '[ -n "$(curl -s -m 5 http://127.0.0.1:18081/hostname)" ]'
first=$(http_get 18081)
check "network: a unit with -p 18081:80 serves" "GET said: ${first:-nothing}; $(systemctl is-active slate-webu.service)" \
  test -n "$first"
systemctl kill -s KILL slate-webu.service
sleep 1
wait_for 90 sh -c 'h=$(curl -s -m 5 http://127.0.0.1:18081/hostname); [ -n "$h" ] && [ "$h" != "$1" ]' _ "$first"
second=$(http_get 18081)
check "network: after SIGKILL the restarted unit serves again on 18081, a new container" \
  "before ${first:-nothing}, after ${second:-nothing}; unit $(systemctl is-active slate-webu.service); log: $(journalctl -q --no-pager -u slate-webu.service | tail -3 | one_line)" \
  sh -c "[ -n '$second' ] && [ '$second' != '$first' ]"
check "network: one veth and one lease while the unit runs (the killed run's were swept)" \
  "veths $(veths), leases $(leases)" test "$(veths)" -eq 1 -a "$(leases)" -eq 1
systemctl stop slate-webu.service
check "network: systemctl stop leaves no veth and no lease" "veths $(veths), leases $(leases)" \
  test "$(veths)" -eq 0 -a "$(leases)" -eq 0
systemctl disable -q slate-webu.service 2>/dev/null
rm -f /etc/systemd/system/slate-webu.service
systemctl daemon-reload

# A user network: a later container finds an earlier one by name.
"$SLATE" network create appnet >/dev/null 2>&1
"$SLATE" run -d -q --name db --network appnet "$IMG" busybox httpd -f -p 80 -h /etc >/dev/null 2>&1
sleep 1
by_name=$("$SLATE" run --rm -q --network appnet "$IMG" busybox wget -qO- http://db/hostname 2>&1)
db_id=$("$SLATE" inspect db 2>/dev/null | grep -o '"id": *"[0-9a-f]*"' | head -1 | grep -o '[0-9a-f]\{12,\}' | cut -c1-12)
check "network: a container on a user network reaches another by name" \
  "wget http://db/ said: $(echo "$by_name" | one_line), db is ${db_id:-?}" test "$by_name" = "$db_id"
"$SLATE" rm -f db >/dev/null 2>&1
"$SLATE" network rm appnet >/dev/null 2>&1
check "network: nothing left after the user network's containers went" "veths $(veths), leases $(leases)" \
  test "$(veths)" -eq 0 -a "$(leases)" -eq 0

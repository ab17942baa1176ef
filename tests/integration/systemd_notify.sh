#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# fusemirror@.service's contract with systemd, without systemd as PID 1:
# the daemon is started with the unit's own ExecStart= command line
# (binary and /etc/fusemirror/%i.conf replaced by the build's and a test
# config), under a stand-in for systemd's notification socket
# (tests/helpers/fm_notify_listener.py):
#   1. abstract socket ("@name"), WATCHDOG_USEC=400000: READY=1 arrives,
#      and at that moment the image is mounted and a read through it
#      succeeds; a STATUS= with the state comes with it; WATCHDOG=1 keeps
#      coming (at least 3 in 2 s); SIGTERM (systemctl stop) brings
#      STOPPING=1 after READY=1 and a clean exit (0);
#   2. path socket, no WATCHDOG_USEC, started on the dead mount of a killed
#      daemon that had written 8 MiB: the dead mount is replaced, STATUS=
#      reports the resync, then its progress once it moved; no WATCHDOG=1;
#   2b. the same after another kill -9, with stderr connected to the journal
#      (JOURNAL_STREAM = its device:inode): the daemon writes journal
#      entries itself (to a stand-in socket), with EVENT=UncleanStart,
#      ARRAY_UUID=, MOUNTPOINT=, RESYNC_REGIONS=, then EVENT=RebuildStarted
#      with RESYNC_BYTES=, and none of it on stderr;
#   3. WATCHDOG_PID naming another process: no WATCHDOG=1 either.
source "$(dirname "$0")/lib.sh"
LISTENER=$(realpath "$(dirname "$0")/../helpers/fm_notify_listener.py")
# The listeners run in the background and are killed by pid: start the
# interpreter itself, not lib.sh's python3 function (a subshell: killing it
# would leave the listener running, holding the test's output open, and
# meson would wait for it until the timeout).
PY=$(type -P /usr/bin/python3 python3 | head -n1)
cd "$T" || fail "cannot cd to $T"

UNIT=${FM_UNIT:-}
[[ -f $UNIT ]] || fail "FM_UNIT is not set to the built fusemirror@.service (run through meson)"

SIZE=$((64 << 20))
mkdir "$T/mnt" "$T/etc"
fm_create --size "$SIZE" --region-size 1M "$T/leg0" "$T/leg1"
cat >"$T/etc/arr.conf" <<CONF
[array]
legs=$T/leg0;$T/leg1
mountpoint=$T/mnt
[mount]
sync_speed_min=256k
sync_speed_max=256k
CONF

# The unit's ExecStart= for instance "arr", with the test's paths.
exec_line=$(sed -n 's/^ExecStart=//p' "$UNIT")
[[ -n $exec_line ]] || fail "no ExecStart= in $UNIT"
read -r -a CMD <<<"$exec_line"
[[ ${CMD[0]} == */fusemirror ]] || fail "ExecStart= does not run fusemirror: $exec_line"
CMD[0]=$FM
for i in "${!CMD[@]}"; do
	CMD[i]=${CMD[i]//\/etc\/fusemirror\/%i.conf/$T/etc/arr.conf}
	[[ ${CMD[i]} != *%* ]] || fail "unexpanded specifier in ExecStart=: ${CMD[i]}"
done
_FM_MOUNTS+=("$T/mnt")
log "unit command line: ${CMD[*]}"

# listen SOCKET LOG: start the listener; wait until it is bound.
listen() {
	"$PY" "$LISTENER" "$1" "$2" --check-mount "$T/mnt" &
	LPID=$!
	fm_wait_for "the notification listener" 30 grep -q LISTENING "$2"
}

# start ENV...: the daemon as systemd would start it (env, then the
# unit's command line), in the background; sets DPID.
start() {
	env --default-signal=INT,TERM "$@" "${CMD[@]}" >>"$T/daemon.log" 2>&1 &
	DPID=$!
	_PIDS+=("$DPID")
}

# stop: SIGTERM, as `systemctl stop` sends; the daemon must exit 0.
stop() {
	local rc=0
	kill -TERM "$DPID"
	wait "$DPID" || rc=$?
	assert_eq "$rc" 0 "exit status after SIGTERM (log: $(tail -n 5 "$T/daemon.log"))"
	assert_not_mounted "$T/mnt"
}

has() { grep -Eq "^[0-9.]+ $2\$" "$1"; }
line_of() { grep -nE "^[0-9.]+ $2\$" "$1" | head -n1 | cut -d: -f1; }

log "1. abstract socket, watchdog"
N1=$T/notify1.log
listen "@fusemirror-test-$$" "$N1"
start NOTIFY_SOCKET="@fusemirror-test-$$" WATCHDOG_USEC=400000
fm_wait_for "READY=1" 60 has "$N1" 'READY=1'
grep -qx 'MOUNTED yes' "$N1" || fail "READY=1 came before the mount was live: $(cat "$N1")"
grep -qx 'READABLE yes' "$N1" || fail "READY=1 came before the image was served: $(cat "$N1")"
has "$N1" 'STATUS=(active|clean), 2 of 2 legs in sync' ||
	fail "no STATUS= with the state: $(cat "$N1")"
sleep 2
n=$(grep -c ' WATCHDOG=1$' "$N1" || true)
((n >= 3)) || fail "only $n WATCHDOG=1 with WATCHDOG_USEC=400000: $(cat "$N1")"
! grep -q STOPPING "$N1" || fail "STOPPING=1 before the stop: $(cat "$N1")"
# Under NOTIFY_SOCKET the daemon is the process systemd started (no fork).
assert_eq "$(fm_daemon_pid "$T/mnt")" "$DPID" "pid serving the mount vs the pid started"
stop
has "$N1" 'STOPPING=1' || fail "no STOPPING=1 after SIGTERM: $(cat "$N1")"
(($(line_of "$N1" 'READY=1') < $(line_of "$N1" 'STOPPING=1'))) ||
	fail "STOPPING=1 before READY=1: $(cat "$N1")"
kill "$LPID"; wait "$LPID" 2>/dev/null || true

log "2. path socket, no watchdog, on a killed daemon's dead mount: resync in STATUS="
fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
head -c $((8 << 20)) /dev/urandom | dd of="$T/mnt/image" bs=1M oflag=direct conv=notrunc \
	iflag=fullblock status=none
fm_crash "$T/mnt"
N2=$T/notify2.log
listen "$T/notify.sock" "$N2"
start NOTIFY_SOCKET="$T/notify.sock"
fm_wait_for "READY=1" 60 has "$N2" 'READY=1'
grep -qx 'MOUNTED yes' "$N2" || fail "READY=1 came before the mount was live: $(cat "$N2")"
grep -q 'replaced the dead mount' "$T/daemon.log" ||
	fail "the dead mount was not replaced: $(cat "$T/daemon.log")"
fm_wait_for "STATUS= with the resync" 30 \
	has "$N2" 'STATUS=resyncing, 2 of 2 legs in sync: resync [0-9.]+% \(.* of 8\.0 MiB\).*'
# ... and updated as it goes (8 MiB at 256 KiB/s: 32 s).
fm_wait_for "STATUS= with the resync's progress" 30 \
	has "$N2" 'STATUS=resyncing, 2 of 2 legs in sync: resync [1-9][0-9.]*% \(.* of 8\.0 MiB\).*'
stop
! grep -q WATCHDOG "$N2" || fail "WATCHDOG=1 without WATCHDOG_USEC: $(cat "$N2")"
has "$N2" 'STOPPING=1' || fail "no STOPPING=1 after SIGTERM: $(cat "$N2")"
kill "$LPID"; wait "$LPID" 2>/dev/null || true

log "2b. stderr connected to the journal (JOURNAL_STREAM): entries with fields"
# The same restart on a killed daemon's dead mount, as systemd runs it:
# stderr is the journal's stream, so the daemon writes to the journal's
# socket itself (here a stand-in, FUSEMIRROR_JOURNAL_SOCKET).
fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
head -c $((4 << 20)) /dev/urandom | dd of="$T/mnt/image" bs=1M oflag=direct conv=notrunc \
	iflag=fullblock status=none
fm_crash "$T/mnt"
J=$T/journal.log
"$PY" "$LISTENER" "$T/journal.sock" "$J" --entries &
JPID=$!
fm_wait_for "the journal stand-in" 30 grep -q LISTENING "$J"
: >"$T/stream.err"
env --default-signal=INT,TERM FUSEMIRROR_JOURNAL_SOCKET="$T/journal.sock" \
	JOURNAL_STREAM="$(stat -c '%d:%i' "$T/stream.err")" "${CMD[@]}" \
	>>"$T/daemon.log" 2>>"$T/stream.err" &
DPID=$!
_PIDS+=("$DPID")
fm_wait_for "the journal entry of the unclean start" 60 \
	grep -q 'EVENT=UncleanStart' "$J"
entry=$(grep 'EVENT=UncleanStart' "$J" | head -n1)
for f in 'PRIORITY=4' 'SYSLOG_IDENTIFIER=fusemirror' 'ARRAY_UUID=[0-9a-f-]{36}' \
	"MOUNTPOINT=$T/mnt" 'RESYNC_REGIONS=[1-9][0-9]*' \
	'MESSAGE=.*not stopped cleanly: [1-9][0-9]* regions will be resynced'; do
	grep -Eq "(^[0-9.]+ |\|)$f(\||\$)" <<<"$entry" || fail "journal entry lacks $f: $entry"
done
fm_wait_for "the journal entry of the resync" 30 grep -q 'EVENT=RebuildStarted' "$J"
grep 'EVENT=RebuildStarted' "$J" | grep -Eq '\|ARRAY_UUID=[0-9a-f-]{36}\|.*\|RESYNC_BYTES=[1-9][0-9]*\|' ||
	fail "RebuildStarted without RESYNC_BYTES: $(grep RebuildStarted "$J")"
# Nothing of it on stderr: the journal got it.
! grep -q 'not stopped cleanly' "$T/stream.err" ||
	fail "with JOURNAL_STREAM the messages still went to stderr: $(cat "$T/stream.err")"
stop
kill "$JPID"; wait "$JPID" 2>/dev/null || true

log "3. WATCHDOG_PID of another process: no keep-alive"
N3=$T/notify3.log
listen "@fusemirror-test3-$$" "$N3"
start NOTIFY_SOCKET="@fusemirror-test3-$$" WATCHDOG_USEC=400000 WATCHDOG_PID=1
fm_wait_for "READY=1" 60 has "$N3" 'READY=1'
sleep 1
stop
! grep -q WATCHDOG "$N3" || fail "WATCHDOG=1 for WATCHDOG_PID=1: $(cat "$N3")"
kill "$LPID"; wait "$LPID" 2>/dev/null || true
log "ok"

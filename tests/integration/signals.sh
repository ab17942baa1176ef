#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Stopping the daemon without `fusemirror umount`:
#   - `fusemirror mount -f` stays in the foreground (the process started is
#     the one serving, it prints the image path) and SIGTERM unmounts
#     cleanly, exit status 0: the superblocks' CLEAN flag (bit 0 of the u32
#     at byte 120), cleared on both legs while mounted, is set again, and
#     data still dirty in the cache (a writer still holds the image open,
#     writeback_age=0; 160 MiB of it) is on both legs; `status`, polled
#     all through the teardown, does not crash the daemon;
#   - SIGINT likewise;
#   - SIGTERM while clients keep the mount busy (4k writes, each followed
#     by an fsync, and 4k reads at queue depth 32, on legs that take 20 ms
#     for every I/O, so that requests are always in flight): the daemon stops
#     within a minute, exit status 0, clean superblocks, legs equal; the
#     clients' requests after the stop fail, which is theirs to see
#     (three rounds: the stop lands at a different point of the load);
#   - a plain `umount MOUNTPOINT` (and `fusermount3 -u`) of a daemonized
#     mount also stops the daemon (waited for) with clean superblocks and
#     the data on both legs.
source "$(dirname "$0")/lib.sh"

SIZE=$((256 << 20))
FILLER=160     # MiB left dirty for the teardown to write back
mkdir "$T/mnt"
fm_create --size "$SIZE" "$T/leg0" "$T/leg1"
for l in leg0 leg1; do sb_clean "$T/$l" || fail "$l not marked clean after create"; done

assert_dirty_while_mounted() {
	local l
	for l in leg0 leg1; do
		! sb_clean "$T/$l" || fail "$l is marked clean while mounted ($1)"
	done
}
assert_clean_after() {
	local l
	for l in leg0 leg1; do
		sb_clean "$T/$l" || fail "$l is not marked clean after $1"
	done
}

# check_data FILE OFFSET WHAT: both legs hold FILE's bytes at OFFSET.
check_data() {
	local l
	for l in leg0 leg1; do
		leg_read "$T/$l" "$2" "$(stat -c %s "$1")" | cmp - "$1" ||
			fail "$l does not hold the data written before $3"
	done
}

# signal_stop SIG: foreground daemon, data left dirty by an open writer,
# then SIG.
signal_stop() {
	local sig=$1 rc=0 off=$((3 << 20)) wpid spid

	log "[$sig] mount -f"
	fm_mount_fg -o writeback_age=0 "$T/leg0" "$T/leg1" "$T/mnt"
	assert_eq "$(fm_daemon_pid "$T/mnt")" "$FM_PID" "pid serving the mount vs the pid started with -f"
	pid_alive "$FM_PID" || fail "the foreground process is gone"
	grep -qxF "$T/mnt/image" "$FM_LOG" || fail "mount -f did not print the image path: $(cat "$FM_LOG")"
	assert_dirty_while_mounted "mount -f"

	head -c $(((1 << 20) + 4321)) /dev/urandom >"$T/data-$sig"
	# A writer that writes (the data, then FILLER MiB of the data's first
	# MiB from 64 MiB on: a teardown that takes a while), reports, then
	# keeps the image open until told.
	mkfifo "$T/go-$sig" "$T/done-$sig"
	python3 - "$T/mnt/image" "$T/data-$sig" "$off" "$T/done-$sig" "$T/go-$sig" "$FILLER" <<'PY' &
import os, sys
img, data, off, done, go = sys.argv[1], open(sys.argv[2], "rb").read(), int(sys.argv[3]), sys.argv[4], sys.argv[5]
fd = os.open(img, os.O_RDWR)
n = os.pwrite(fd, data, off)
for i in range(int(sys.argv[6])):
    os.pwrite(fd, data[:1 << 20], (64 + i) << 20)
with open(done, "w") as f:
    f.write(f"{n}\n")
open(go).read()
try:
    os.close(fd)    # the mount is gone by now: ENOTCONN is fine
except OSError:
    pass
PY
	wpid=$!
	# FIFOs opened read-write never block on open: a writer that died
	# cannot hang the test.
	exec 7<>"$T/done-$sig"
	read -r -t 120 -u 7 n || fail "the writer did not report (died?)"
	exec 7<&-
	assert_eq "$n" "$(stat -c %s "$T/data-$sig")" "bytes written by the writer"
	fm status --json "$T/mnt" | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["cache"]["dirty"] == 0)' ||
		fail "nothing dirty in the cache before $sig: the test would not show the teardown writeback"

	# `status` is asked all along the teardown (the daemon goes on
	# answering it while it writes the cache back, and must not crash).
	log "[$sig] kill -$sig (a writer still holds the image open; status polled meanwhile)"
	(
		trap - ERR
		set +e
		while :; do "$FM" status --json "$T/mnt" >/dev/null 2>&1; done
	) &
	spid=$!
	kill -"$sig" "$FM_PID"
	wait "$FM_PID" || rc=$?
	kill "$spid" 2>/dev/null || true
	wait "$spid" || true
	exec 7<>"$T/go-$sig"
	echo >&7
	exec 7>&-
	wait "$wpid" || true
	assert_eq "$rc" 0 "exit status of mount -f after SIG$sig (log: $(tail -n 5 "$FM_LOG"))"
	assert_not_mounted "$T/mnt"
	assert_clean_after "SIG$sig"
	check_data "$T/data-$sig" "$off" "SIG$sig"
	head -c $((1 << 20)) "$T/data-$sig" >"$T/filler-$sig"
	check_data "$T/filler-$sig" $((64 << 20)) "SIG$sig (filler, first MiB)"
	check_data "$T/filler-$sig" $(((64 + FILLER - 1) << 20)) "SIG$sig (filler, last MiB)"
	assert_legs_equal "$T/leg0" "$T/leg1" >/dev/null
}

signal_stop TERM
signal_stop INT

# busy_stop ROUND: mount -f, a load that never pauses, then SIGTERM.
busy_stop() {
	local rc=0 fpid i l

	log "[busy $1] mount -f, fio load, SIGTERM"
	fm_mount_fg "$T/leg0" "$T/leg1" "$T/mnt"
	# Every leg I/O takes 20 ms: requests are always in flight, so a
	# daemon that keeps taking new ones after the stop never sees the
	# end of them.
	for l in leg0 leg1; do
		fm_ok inject "$T/mnt" "$T/$l" --delay-reads 20 --delay-writes 20 \
			--offset 0 --length "$SIZE"
	done
	# The daemon's errors after the stop are what fio reports: its exit
	# status and output are not looked at.
	fio --output=/dev/null --filename="$T/mnt/image" --direct=1 --ioengine=io_uring \
		--time_based --runtime=600 --size=64M --bs=4k --group_reporting \
		--name=w --rw=randwrite --iodepth=8 --fsync=1 --numjobs=4 \
		--name=r --rw=randread --iodepth=32 >/dev/null 2>&1 &
	fpid=$!
	_PIDS+=("$fpid")
	sleep_ms_between 1500 2500
	pid_alive "$fpid" || fail "fio ended before the stop"
	kill -TERM "$FM_PID"
	for ((i = 0; i < 600; i++)); do
		pid_alive "$FM_PID" || break
		sleep 0.1
	done
	pid_alive "$FM_PID" &&
		fail "the daemon still runs 60 s after SIGTERM under load (log: $(tail -n 5 "$FM_LOG"))"
	wait "$FM_PID" || rc=$?
	kill "$fpid" 2>/dev/null || true
	wait "$fpid" || true
	assert_eq "$rc" 0 "exit status of mount -f after SIGTERM under load (log: $(tail -n 5 "$FM_LOG"))"
	grep -q 'stopped cleanly' "$FM_LOG" || fail "no 'stopped cleanly' in the log: $(tail -n 5 "$FM_LOG")"
	assert_not_mounted "$T/mnt"
	assert_clean_after "SIGTERM under load"
	assert_legs_equal "$T/leg0" "$T/leg1" >/dev/null
}

for round in 1 2 3; do busy_stop "$round"; done

# plain_umount CMD...: daemonized mount, data, then CMD MOUNTPOINT.
plain_umount() {
	local pid off=$(((7 << 20) + 512))

	log "[$1] mount (daemon)"
	fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
	pid=$FM_PID
	assert_dirty_while_mounted "mount"
	head -c $((2 << 20)) /dev/urandom >"$T/data-$1"
	dd if="$T/data-$1" of="$T/mnt/image" bs=64k oflag=seek_bytes seek="$off" conv=notrunc status=none
	log "[$1] $* $T/mnt"
	"$@" "$T/mnt" || fail "$* $T/mnt failed"
	wait_pid_gone "$pid" 30 || fail "the daemon (pid $pid) still runs 30 s after $*"
	assert_not_mounted "$T/mnt"
	assert_clean_after "$*"
	check_data "$T/data-$1" "$off" "$*"
	assert_legs_equal "$T/leg0" "$T/leg1" >/dev/null
}

plain_umount umount
plain_umount fusermount3 -u

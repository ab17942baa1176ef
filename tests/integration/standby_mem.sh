#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Standby loops on legs in memory (front.c, loop_standby_mem()): on
# /dev/fuse one loop reads requests always and the others only while
# reads or writes of 128 KiB or more, requests one at a time, or several
# clients' requests at a depth come.
# One client's 4k writes at depth 32 are read by the one loop (the standby loops read
# few, under a quarter, once the small requests turned them off; a batch of
# one turns them on again for a while); 4k writes of 4 clients at depth 8
# turn them on (they read a quarter or more: several callers); 1M writes
# turn them on (they read some); and
# when small requests turn them off again, no request is left unread in
# the kernel's queue (fio in bursts it waits for whole must end: see
# standby_bursts.sh for why a standby loop that stops polling may owe
# reads).  Needs 2 CPUs or more; run with FM_TEST_TMPDIR on tmpfs.
source "$(dirname "$0")/lib.sh"

SIZE=$((256 << 20))
RUNS=4
NCPU=$(getconf _NPROCESSORS_ONLN)
case $(stat -f -c %T "$T") in
tmpfs | ramfs) ;;
*)
	echo "standby_mem: SKIP: legs not in memory ($(stat -f -c %T "$T"))"
	exit 77
	;;
esac
if ((NCPU < 2)); then
	echo "standby_mem: SKIP: one CPU, no standby loop"
	exit 77
fi

fm_mount_standby "$SIZE"
conn=/sys/fs/fuse/connections/$(stat -c %d "$img")
sb() { fm_status_get "$T/mnt" .io.standby_reads; }
w4k=(--filename="$img" --direct=1 --rw=randwrite --bs=4k --ioengine=io_uring --iodepth=32
	--size="$SIZE" --norandommap --randrepeat=0 --time_based)
w1m=(--filename="$img" --direct=1 --rw=write --bs=1M --ioengine=io_uring --iodepth=8
	--size="$SIZE" --time_based)

log "4k QD32 randwrite, 1 s, then 2 s: the standby loops read few"
run_fio small0 "${w4k[@]}" --runtime=1
s0=$(sb) n0=$(fm_status_get "$T/mnt" .io.writes)
run_fio small1 "${w4k[@]}" --runtime=2
s1=$(sb) n1=$(fm_status_get "$T/mnt" .io.writes)
log "standby reads $((s1 - s0)) of $((n1 - n0)) requests"
((n1 - n0 > 1000)) || fail "only $((n1 - n0)) writes in 2 s"
(((s1 - s0) * 4 <= n1 - n0)) ||
	fail "the standby loops read $((s1 - s0)) of $((n1 - n0)) 4k writes (a quarter or more)"

log "4k QD8 randwrite, 4 clients, 2 s: the standby loops read a share"
run_fio clients "${w4k[@]}" --iodepth=8 --numjobs=4 --group_reporting --runtime=2
s2=$(sb) n2=$(fm_status_get "$T/mnt" .io.writes)
log "standby reads $((s2 - s1)) of $((n2 - n1)) requests"
((n2 - n1 > 1000)) || fail "only $((n2 - n1)) writes in 2 s"
(((s2 - s1) * 4 >= n2 - n1)) ||
	fail "the standby loops read $((s2 - s1)) of $((n2 - n1)) 4k writes of 4 clients" \
		"(under a quarter): several clients did not turn them on"
s1=$s2

log "1M QD8 write, 2 s: the standby loops read some"
run_fio big "${w1m[@]}" --runtime=2
s2=$(sb)
log "standby reads $((s2 - s1))"
((s2 > s1)) || fail "the standby loops read none of the 1M writes: not turned on"

for ((run = 1; run <= RUNS; run++)); do
	log "run $run: 1M writes 1 s (on), then 4k bursts of 8 waited whole 2 s (off)"
	run_fio "on$run" "${w1m[@]}" --runtime=1
	run_fio_bg "bursts$run" --filename="$img" --direct=1 --rw=randwrite --bs=4k \
		--ioengine=io_uring --iodepth=8 --iodepth_batch_submit=8 \
		--iodepth_batch_complete_min=8 --size="$SIZE" --norandommap --randrepeat=0 \
		--time_based --runtime=2
	if ! wait_pid_gone "$FIO_PID" 17; then
		fail "run $run: fio still waits 17s after a 2s run:" \
			"$(cat "$conn/waiting" 2>/dev/null || echo '?') request(s) unanswered"
	fi
	fio_wait "bursts$run" "$FIO_PID"
done
fm_umount "$T/mnt"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# No request is left unread in the kernel's queue when a standby loop stops
# polling (front.c, loop_standby()).  An io_uring poll takes the wake-ups
# of every request queued between its own wake-up and its task work (the
# entry stays on /dev/fuse's wait queue until then and tells each
# exclusive wake-up it woke someone), so the loop it woke owes those
# requests a read: a standby loop that read one (lone) and stopped polling
# left the rest queued, every loop asleep, until another request came.
# fio in bursts it waits for whole (iodepth_batch_submit =
# iodepth_batch_complete_min = iodepth) sends none: it waited forever
# (main 6916b17, 2 CPUs: 2 of 3 such 4 s runs).  4k writes into the cache
# turn the standby loops on, 25% cold reads from the legs turn them off
# again, over and over.  Each run must end within its runtime plus 15 s.
source "$(dirname "$0")/lib.sh"

SIZE=$((256 << 20))
RUNS=6
RUNTIME=3           # s, each run
NCPU=$(getconf _NPROCESSORS_ONLN)
case $(stat -f -c %T "$T") in
tmpfs | ramfs) STANDBY=0 ;;
*) STANDBY=$((NCPU - (NCPU > 1 ? NCPU / 2 : 1))) ;;
esac
if ((STANDBY == 0)); then
	echo "standby_bursts: SKIP: no standby loop ($NCPU CPUs, legs on $(stat -f -c %T "$T"))"
	exit 77
fi

fm_mount_standby "$SIZE"
log "fill the image (reads of written blocks go to the legs)"
run_fio fill --filename="$img" --direct=1 --rw=write --bs=1M --iodepth=4 --ioengine=io_uring \
	--size="$SIZE"
conn=/sys/fs/fuse/connections/$(stat -c %d "$img")
sb0=$(fm_status_get "$T/mnt" .io.standby_reads)
for ((run = 1; run <= RUNS; run++)); do
	log "run $run: 4k randrw (25% reads) in bursts of 8 waited whole, ${RUNTIME}s"
	run_fio_bg "bursts$run" --filename="$img" --direct=1 --rw=randrw --rwmixread=25 --bs=4k \
		--ioengine=io_uring --iodepth=8 --iodepth_batch_submit=8 \
		--iodepth_batch_complete_min=8 --size="$SIZE" --norandommap --randrepeat=0 \
		--time_based --runtime="$RUNTIME"
	if ! wait_pid_gone "$FIO_PID" $((RUNTIME + 15)); then
		fail "run $run: fio still waits $((RUNTIME + 15))s after a ${RUNTIME}s run:" \
			"$(cat "$conn/waiting" 2>/dev/null || echo '?') request(s) unanswered," \
			"$(fm_status_get "$T/mnt" .io.writes) writes answered so far"
	fi
	fio_wait "bursts$run" "$FIO_PID"
done
sb=$(($(fm_status_get "$T/mnt" .io.standby_reads) - sb0))
log "requests read by standby loops: $sb"
((sb > 0)) || fail "the standby loops read nothing: the runs did not test them"
fm_umount "$T/mnt"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# On a kernel without IORING_OP_READ_MULTISHOT (before 6.7: Debian 12's
# 6.1), the event loop that reads /dev/fuse on its ring (legs on disk, one
# always-polling loop: src/front/front.c, loop_arm_reads()) polls and
# read()s instead, and serves every request.  This kernel has the opcode,
# so the test shows the daemon an older one with an LD_PRELOAD library
# (tests/helpers/fm_old_kernel.c), in its two shapes:
#   probe   the ring's opcode probe says no: the READ is never armed
#           (loop_rd_init());
#   einval  the probe says yes but the kernel fails the READ with EINVAL:
#           the loop takes its request buffers back and polls, and arms no
#           READ again (loop_rd_done(), loop_rd_off()).
# A first mount without the library is the control: there the loop must
# read nearly every request on its ring, so a library that did nothing
# (or a daemon that no longer reads on its ring) fails the test rather
# than passing it.  Each mount reads and writes with fio's verification,
# at depth 32 and at depth 1, and unmounts cleanly.
source "$(dirname "$0")/lib.sh"

[[ -f ${FM_OLD_KERNEL_LIB:-} ]] ||
	fail "FM_OLD_KERNEL_LIB is not set to the fm_old_kernel helper (run through meson)"
case $(stat -f -c %T "$T") in
tmpfs | ramfs)
	echo "ring_read_fallback: SKIP: legs in memory: no loop reads /dev/fuse on its ring"
	exit 77
	;;
esac
if [[ ${FM_TRANSPORT:-} == uring ]]; then
	echo "ring_read_fallback: SKIP: the io_uring transport has no /dev/fuse loop"
	exit 77
fi
# Half the CPUs' loops poll always on legs on disk (front_run_loops()); only
# a lone one reads on its ring.
NCPU=$(getconf _NPROCESSORS_ONLN)
if ((NCPU / 2 > 1)); then
	echo "ring_read_fallback: SKIP: $((NCPU / 2)) always-polling loops: none reads on its ring"
	exit 77
fi

SIZE=$((64 << 20))
img=$T/mnt/image
mkdir "$T/mnt"
fm_create --size "$SIZE" "$T/leg0" "$T/leg1"

counts=$T/old-kernel
# count N: the library's Nth counter (0: probes answered no, 1: READs refused).
count() { od -An -tu8 -j$(($1 * 8)) -N8 "$counts" | tr -d ' '; }

# serve MODE: mount (with the library in MODE, or without it for "none"),
# read and write with verification, check who read the requests, unmount.
serve() {
	local mode=$1 reads rr w0 w rr_w

	log "$mode: mount"
	rm -f "$counts"
	if [[ $mode == none ]]; then
		fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
	else
		LD_PRELOAD=$FM_OLD_KERNEL_LIB FM_OLD_KERNEL=$mode FM_OLD_KERNEL_FILE=$counts \
			fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
	fi
	rr=$(fm_status_get "$T/mnt" .io.ring_reads)
	reads=$(fm_status_get "$T/mnt" .io.reads)
	run_fio "rd-$mode" --filename="$img" --direct=1 --rw=randread --bs=4k --iodepth=32 \
		--ioengine=io_uring --size="$SIZE" --io_size=16M \
		--verify=crc32c --verify_only=1 --verify_fatal=1
	run_fio "rd1-$mode" --filename="$img" --direct=1 --rw=randread --bs=4k --iodepth=1 \
		--ioengine=psync --size="$SIZE" --io_size=2M \
		--verify=crc32c --verify_only=1 --verify_fatal=1
	rr=$(($(fm_status_get "$T/mnt" .io.ring_reads) - rr))
	reads=$(($(fm_status_get "$T/mnt" .io.reads) - reads))
	log "$mode: $reads reads, $rr requests read on the loop's ring"
	((reads >= 4608)) || fail "$mode: only $reads reads counted for 4608 fio reads"
	w0=$(fm_status_get "$T/mnt" .io.writes)
	rr_w=$(fm_status_get "$T/mnt" .io.ring_reads)
	run_fio "wr-$mode" --filename="$img" --direct=1 --rw=randwrite --bs=4k --iodepth=32 \
		--ioengine=io_uring --size="$SIZE" --io_size=16M --randseed=$RANDOM \
		--verify=crc32c --verify_fatal=1
	w=$(($(fm_status_get "$T/mnt" .io.writes) - w0))
	rr_w=$(($(fm_status_get "$T/mnt" .io.ring_reads) - rr_w))
	log "$mode: $w writes, $rr_w requests read on the ring (writes and their verify)"
	case $mode in
	none)
		((rr * 10 >= reads * 9)) ||
			fail "control: the loop read $rr of $reads requests on its ring (front.c," \
				"loop_arm_reads()): the fallback below would prove nothing"
		;;
	probe)
		assert_eq "$rr" 0 "requests read on the ring when the probe says no"
		assert_eq "$rr_w" 0 "requests read on the ring when the probe says no (writes)"
		(($(count 0) >= 1)) || fail "probe: the daemon never asked the opcode probe"
		assert_eq "$(count 1)" 0 "READs submitted when the probe says no"
		;;
	einval)
		assert_eq "$rr" 0 "requests read on the ring when the kernel refuses the READ"
		assert_eq "$rr_w" 0 "requests read on the ring when the kernel refuses the READ (writes)"
		assert_eq "$(count 0)" 0 "probes answered no in mode einval"
		# One READ armed, refused, and never armed again.
		assert_eq "$(count 1)" 1 "multishot READs submitted (and refused)"
		;;
	esac
	fm_umount "$T/mnt"
}

log "write the image (fio verify headers)"
fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
run_fio fill --filename="$img" --direct=1 --rw=write --bs=1M --iodepth=4 --ioengine=io_uring \
	--size="$SIZE" --verify=crc32c --verify_interval=4k --do_verify=0
fm_umount "$T/mnt"

for mode in none probe einval; do
	serve "$mode"
done

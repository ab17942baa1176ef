#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# 4k reads on legs on disk are not capped by the event loops' request
# buffers.  A loop reads each request into a ~1 MiB buffer, FRONT_RBUFS of
# them per loop (12); a read of up to 8 KiB moves to one of the loop's 128
# small buffers and gives the big one back at once, so reads in flight are
# bounded by the client's depth, not by 12 per loop (doc/DESIGN.md, "Threads
# and I/O").  Both legs are made slow (`inject --delay-reads`: every read
# piece completes DELAY ms late) and fio reads at a depth well above the
# loops' buffers for RUNTIME seconds: with every read waiting DELAY ms, the
# count done is about depth x RUNTIME / DELAY.  Capped at 12 per loop it
# would be about 12 x loops x (RUNTIME / DELAY + 1); the test wants twice
# that (here: 568 reads with the small buffers disabled, 2408 with them,
# against 1008).  The data read is checked
# (fio verify).
#
# On legs on disk the loops past the first half are standby loops
# (front.c, loop_standby()): they read no request while reads keep leg
# I/O in flight (io.standby_reads stays ~0 through the slow reads), and
# take their share once 4k writes into the cache keep a loop busy
# without leg I/O (a randwrite at the end).  With one always-polling loop
# there, it reads the requests with a multishot READ on its ring
# (io.ring_reads: nearly every request of the slow reads; none on legs
# in memory), and serves those that come in while it answers a burst of
# completions before the burst's other replies (engine.first_ops).  1 MiB reads on disk legs are answered by io-wq workers
# (io.async_replies), from request buffers in huge pages.
source "$(dirname "$0")/lib.sh"

SIZE=$((64 << 20))
DELAY=100           # ms per read piece
RUNTIME=2           # s
RBUFS=12            # request buffers per /dev/fuse loop (src/front/front.c)
# Event loops: one per CPU; when the legs are not in memory (as here unless
# FM_TEST_TMPDIR is a tmpfs) half of them (at least one) poll always and
# the rest are standby loops (front_run_loops()): LOOPS read the reads.
NCPU=$(getconf _NPROCESSORS_ONLN)
case $(stat -f -c %T "$T") in
tmpfs | ramfs) LOOPS=$NCPU STANDBY=0 MEM=1 ;;
*) LOOPS=$((NCPU > 1 ? NCPU / 2 : 1)) STANDBY=$((NCPU - (NCPU > 1 ? NCPU / 2 : 1))) MEM=0 ;;
esac
DEPTH=$((RBUFS * LOOPS * 3 + 16))
# A loop has 128 small buffers: past 6 CPUs the depth that tells the two
# apart needs more of them than one loop may get.
if ((DEPTH > 256)); then
	echo "read_depth: SKIP: $LOOPS event loops (the test tells capped from uncapped up to 6)"
	exit 77
fi

mkdir "$T/mnt"
fm_create --size "$SIZE" "$T/leg0" "$T/leg1"
fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
img=$T/mnt/image

log "write the image (fio verify headers), then slow both legs' reads"
run_fio fill --filename="$img" --direct=1 --rw=write --bs=1M --iodepth=4 --ioengine=io_uring \
	--size="$SIZE" --verify=crc32c --verify_interval=4k --do_verify=0
if [[ $(fm_status_get "$T/mnt" .transport.name) == dev ]]; then
	# Loop 0 is the daemon's main thread, the others are named fm-loop.
	loops=$(cat /proc/"$FM_PID"/task/*/comm | grep -cx fm-loop || :)
	assert_eq "$((loops + 1))" "$((LOOPS + STANDBY))" \
		"event loops on $(stat -f -c %T "$T") legs, $NCPU CPUs"
fi
sb0=$(fm_status_get "$T/mnt" .io.standby_reads)
rr0=$(fm_status_get "$T/mnt" .io.ring_reads)
fo0=$(fm_status_get "$T/mnt" .engine.first_ops)
for leg in "$T/leg0" "$T/leg1"; do
	fm_ok inject "$T/mnt" "$leg" --delay-reads "$DELAY"
done
v=$(fm_leg_get "$T/mnt" "$T/leg0" fault | python3 -c 'import json,sys; print(json.load(sys.stdin)["delay_reads"])')
assert_eq "$v" True "leg 0's fault has delay_reads"

log "4k random reads at depth $DEPTH for ${RUNTIME}s, every read ${DELAY} ms late"
run_fio depth --filename="$img" --direct=1 --rw=randread --bs=4k --iodepth="$DEPTH" \
	--ioengine=io_uring --size="$SIZE" --time_based --runtime="$RUNTIME" \
	--verify=crc32c --verify_only=1 --verify_fatal=1
done_ios=$(python3 -c 'import json,sys; t=open(sys.argv[1]).read(); j=json.loads(t[t.index("{"):]); print(j["jobs"][0]["read"]["total_ios"])' "$T/fio-depth.json")
capped=$((RBUFS * LOOPS * (RUNTIME * 1000 / DELAY + 1)))
log "reads done: $done_ios (capped by the request buffers: about $capped)"
((done_ios >= 2 * capped)) ||
	fail "only $done_ios reads in ${RUNTIME}s at ${DELAY} ms each: fewer than 2 x $capped," \
		"as if each held one of the $RBUFS request buffers of its loop"
sb=$(($(fm_status_get "$T/mnt" .io.standby_reads) - sb0))
log "requests read by standby loops through the reads: $sb"
((sb * 20 <= done_ios)) ||
	fail "standby loops read $sb of $done_ios requests while reads kept leg I/O in flight"
rr=$(($(fm_status_get "$T/mnt" .io.ring_reads) - rr0))
log "requests read by the loop's multishot READ: $rr"
if [[ $(fm_status_get "$T/mnt" .transport.name) == dev ]] && ((MEM == 0 && LOOPS == 1)); then
	((rr * 10 >= done_ios * 9)) ||
		fail "the one always-polling loop read $rr of $done_ios requests on its ring" \
			"(front.c, loop_arm_reads())"
	# The reads complete in bursts (each waits DELAY ms, then the disk):
	# the requests the first replies of a burst let fio send are served
	# before the burst's other replies (dmio_loop_set_first()).
	fo=$(($(fm_status_get "$T/mnt" .engine.first_ops) - fo0))
	log "requests served ahead of a burst's replies: $fo"
	((fo > 0)) ||
		fail "no request read during a burst of completions was served before its rest" \
			"(engine.first_ops 0: dmio_loop_set_first())"
else
	assert_eq "$rr" 0 "requests read on a ring with $LOOPS always-polling loop(s)"
fi

for leg in "$T/leg0" "$T/leg1"; do
	fm_ok inject "$T/mnt" "$leg" --clear
done

if [[ $(fm_status_get "$T/mnt" .transport.name) == dev ]] && ((MEM == 0)); then
	# 1 MiB reads on legs on disk: a loop has an io-wq worker write
	# each reply (front.c, loop_reply_async()), and the data read is the
	# data written.  The request buffers lie in huge pages, so that a
	# leg read of 1 MiB into one is a segment or two for the disk, not
	# 256: each loop's buffers (RBUFS of 1 MiB + 8 KiB) and 128 small
	# ones of 8 KiB are one mapping of 14 MiB (fm_map_huge()).
	log "1 MiB reads: replies written by io-wq, data verified"
	a0=$(fm_status_get "$T/mnt" .io.async_replies)
	r0=$(fm_status_get "$T/mnt" .io.reads)
	run_fio big --filename="$img" --direct=1 --rw=read --bs=1M --iodepth=8 \
		--ioengine=io_uring --size="$SIZE" --verify=crc32c --verify_interval=4k \
		--verify_only=1 --verify_fatal=1
	a=$(($(fm_status_get "$T/mnt" .io.async_replies) - a0))
	r=$(($(fm_status_get "$T/mnt" .io.reads) - r0))
	log "replies written by io-wq workers: $a of $r reads"
	((r >= SIZE >> 20 && a * 10 >= r * 9)) ||
		fail "$a of $r 1 MiB reads were answered by loop_reply_async()"
	thp=/sys/kernel/mm/transparent_hugepage/enabled
	if [[ -r $thp && $(<"$thp") != *"[never]"* ]]; then
		map_kb=$(( ((RBUFS * ((1 << 20) + 8192) + 128 * 8192 + (2 << 20) - 1) >> 21) * 2048 ))
		huge=$(awk -v want="$map_kb" '/^Size:/ { sz = $2 }
			/^AnonHugePages:/ { if (sz == want && $2 >= 2048) n++ } END { print n + 0 }' \
			/proc/"$FM_PID"/smaps)
		log "loop buffer mappings of $map_kb kB in huge pages: $huge"
		((huge >= 1)) || fail "no event loop's request buffers ($map_kb kB) in huge pages"
	fi
fi

if [[ $(fm_status_get "$T/mnt" .transport.name) == dev ]] && ((STANDBY > 0)); then
	log "4k random writes at depth 32 (into the cache): the standby loops take a share"
	sb0=$(fm_status_get "$T/mnt" .io.standby_reads)
	w0=$(fm_status_get "$T/mnt" .io.writes)
	run_fio writes --filename="$img" --direct=1 --rw=randwrite --bs=4k --iodepth=32 \
		--ioengine=io_uring --size="$SIZE" --time_based --runtime=2
	sb=$(($(fm_status_get "$T/mnt" .io.standby_reads) - sb0))
	w=$(($(fm_status_get "$T/mnt" .io.writes) - w0))
	log "requests read by standby loops: $sb of $w writes"
	((sb * 20 >= w)) ||
		fail "standby loops read $sb of $w 4k writes into the cache (wanted 5% or more)"
fi
fm_umount "$T/mnt"

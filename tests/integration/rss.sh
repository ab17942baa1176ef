#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Memory (issue 10): the daemon's peak RSS stays within cache_size + 64 MiB
# on both transports.  A cache is filled with 2k random writes over more
# than it holds (dirty blocks, their writeback, evictions), then 1 MiB
# writes and reads go around it (request buffers; on io_uring the queues'
# payload buffers).  /dev/fuse with a 256 MiB cache (its 65k block
# headers, ~13 MiB, count in cache_size), io_uring with 128 MiB.  Measured
# (2 CPUs): 303 and 184 MiB; before the headers were counted and while each
# event loop had 16 registered 1 MiB request buffers (on io_uring too):
# 332 and 215 MiB, over the bounds (320 and 192).  The enable_uring
# parameter is restored.
#
# The daemon's own memory, not its legs': dmio maps legs on tmpfs and
# copies through the mapping (src/dmio/map.c), so the leg pages it touched
# count in its VmRSS and VmHWM as RssShmem, up to the legs' size (here 2 x
# 320 MiB), memory that is the legs' whether mapped or not.  So two
# measures of the rest, both within the bound:
#   - the peak of RssAnon + RssFile, sampled every 0.1 s while fio runs
#     (misses a spike shorter than that);
#   - VmHWM minus RssShmem at the end (the legs' pages are only ever
#     mapped more during the test, so this is at most the peak of the rest,
#     and exact when the peak came late, as the 1 MiB requests' buffers do).
# Without mapped legs RssShmem is 0 and the second is VmHWM, as before.
source "$(dirname "$0")/lib.sh"

SIZE=$((320 << 20))
# Legs on tmpfs (as bench/compare's): a disk under load took a minute and
# a half to drop 768 MiB of written files at the end.
mkdir -p "$T/mnt" "$T/legs"
fs_mount -t tmpfs -o size=700M fusemirror-test "$T/legs"
fm_create --size "$SIZE" "$T/legs/leg0" "$T/legs/leg1"
transports=(dev:256)
fm_uring_param_hold
P=/sys/module/fuse/parameters/enable_uring
if [[ -e $P ]]; then
	saved=$(cat "$P")
	fm_on_cleanup "echo $saved >$P"
	echo Y >"$P"
	transports+=(uring:128)
fi

# rss_sample PID FILE: keep the peak of PID's RssAnon + RssFile (KiB) in
# FILE, sampled every 0.1 s, until PID is gone or this is killed.
rss_sample() {
	local peak=0 a
	while a=$(awk '/^(RssAnon|RssFile):/ { n += $2 } END { print n + 0 }' \
			"/proc/$1/status" 2>/dev/null) && ((a > 0)); do
		((a > peak)) && { peak=$a; echo "$peak" >"$2"; }
		sleep 0.1
	done
}

for t in "${transports[@]}"; do
	tr=${t%:*} CACHE=$((${t#*:} << 20))
	FM_TRANSPORT=$tr fm_mount -o "cache_size=$CACHE" "$T/legs/leg0" "$T/legs/leg1" "$T/mnt"
	rss_sample "$FM_PID" "$T/own-$tr" &
	sampler=$!
	fm_on_cleanup "kill $sampler 2>/dev/null"
	# On legs in memory whole blocks are written around the cache
	# (front.c), partial ones go through it: 2k writes, each dirtying a
	# block of its own mostly, as many as twice the blocks the cache holds.
	run_fio "fill-$tr" --filename="$T/mnt/image" --direct=1 --rw=randwrite --bs=2k \
		--iodepth=32 --ioengine=io_uring --size="$SIZE" --io_size="$CACHE"
	cache=$(fm_status_get "$T/mnt" .cache)
	python3 - "$cache" "$CACHE" <<'PY' || fail "$tr: the cache's counters after the fill are out of bounds: $cache"
import json, sys
c, limit = json.loads(sys.argv[1]), int(sys.argv[2])
assert c["limit_bytes"] == limit, c
assert c["peak_bytes"] >= limit * 0.98, c
# The limit is checked, not reserved (include/fusemirror/bufio.h): two
# loops allocating at once, or copies on write of blocks being written,
# may pass it by a few blocks (CI saw 720 bytes over); 1 MiB is 256 blocks.
assert c["peak_bytes"] <= limit + (1 << 20), c
# Block memory is mapped in 2 MiB chunks; threads that found no free slot
# at once each mapped one, and all stayed (before ca19ea1: 61 needed, up
# to 68 mapped, 14 MiB over).  Within the limit but for the last chunk.
chunk = 2 << 20
assert c["data_bytes"] <= limit + chunk, c
assert c["data_bytes"] >= c["peak_bytes"] * 0.8, c
PY
	log "$tr: cache block memory $(($(fm_status_get "$T/mnt" .cache.data_bytes) >> 20)) MiB" \
		"mapped after the fill"
	# The human status says the same (no I/O runs between the two).
	human=$(timeout -k 5 30 "$FM" status "$T/mnt") || fail "$tr: fusemirror status failed"
	python3 - "$human" "$(cat "$T/status.json")" <<'PY' ||
import json, re, sys
m = re.search(r"block memory mapped ([0-9.]+) (KiB|MiB|GiB)", sys.argv[1])
assert m, "no 'block memory mapped' in the cache line"
unit = 1 << {"KiB": 10, "MiB": 20, "GiB": 30}[m.group(2)]
want = json.loads(sys.argv[2])["cache"]["data_bytes"]
assert abs(float(m.group(1)) * unit - want) <= 0.05 * unit, (m.group(0), want)
PY
		fail "$tr: status's cache line does not show the block memory of status --json: $human"
	run_fio "big-$tr" --filename="$T/mnt/image" --direct=1 --bs=1M --iodepth=8 \
		--ioengine=io_uring --size=64M --name=w --rw=write --name=r --rw=read \
		--stonewall
	kill "$sampler" 2>/dev/null
	wait "$sampler" 2>/dev/null || true
	hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$FM_PID/status")
	shmem=$(awk '/^RssShmem:/ {print $2}' "/proc/$FM_PID/status")
	own=$(cat "$T/own-$tr" 2>/dev/null) || fail "$tr: no RSS sample of the daemon"
	log "$tr: peak RSS $((hwm >> 10)) MiB (VmHWM), mapped legs $((shmem >> 10)) MiB" \
		"(RssShmem at the end), own memory: peak RssAnon+RssFile $((own >> 10)) MiB," \
		"VmHWM - RssShmem $(((hwm - shmem) >> 10)) MiB; cache_size $((CACHE >> 20)) MiB"
	((own <= (CACHE >> 10) + 65536)) ||
		fail "$tr: peak RssAnon+RssFile $((own >> 10)) MiB > cache_size $((CACHE >> 20)) MiB + 64 MiB"
	((hwm - shmem <= (CACHE >> 10) + 65536)) ||
		fail "$tr: VmHWM - RssShmem $(((hwm - shmem) >> 10)) MiB > cache_size $((CACHE >> 20)) MiB + 64 MiB"
	fm_umount "$T/mnt"
done
assert_legs_equal "$T/legs/leg0" "$T/legs/leg1" >/dev/null

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Nothing blocks an event loop (issue 10, item 2; -o event_loop).
# One leg is made slow (`inject --delay-writes`: every write piece in the
# first half of the image lands 100 ms late), a small cache (cache_size=2M,
# threads=2) is filled with dirty blocks there by 4 writers, so that every
# new write into the cache must wait for the slow writeback.  Meanwhile:
#   - reads of the other half (cached or not) are answered, every byte
#     right, each within a few seconds;
#   - a 1 MiB write around the cache into the other half is answered, and
#     reads back;
#   - status is answered and shows the cache mostly dirty (the stall is
#     real, not a test that never filled the cache).
# A loop that waited for cache memory (or for the slow writeback) would
# leave these reads unanswered until the writeback caught up: each read has
# 10 s.  At the end the fault is cleared, the writers stop, and after umount
# the legs are identical.
source "$(dirname "$0")/lib.sh"
cd "$T" || fail "cannot cd to $T"

SIZE=$((256 << 20))
HALF=$((SIZE / 2))
mkdir "$T/mnt"
fm_create --size "$SIZE" --region-size 1M "$T/leg0" "$T/leg1"
img=$T/mnt/image
head -c $((8 << 20)) /dev/urandom >"$T/b.data"

fm_mount -o event_loop,cache_size=2M,threads=2,writeback_age=0 "$T/leg0" "$T/leg1" "$T/mnt"
# The other half's data, on the legs before the slow disk starts.
dd if="$T/b.data" of="$img" bs=1M seek=$((HALF >> 20)) oflag=direct conv=notrunc,fsync \
	status=none
fm_ok inject "$T/mnt" "$T/leg1" --delay-writes 100 --offset 0 --length "$HALF"

wpids=()
for i in 0 1 2 3; do
	fio --name="dirty$i" --filename="$img" --rw=randwrite --bs=4k --direct=1 \
		--ioengine=psync --offset=$((i * (32 << 20))) --size=32M --time_based \
		--runtime=120 --randseed=$((i + 1)) >"$T/fio$i.log" 2>&1 &
	wpids+=($!)
done
_PIDS+=("${wpids[@]}")

# The cache fills with dirty blocks: wait until most of it is.
full=0
for ((s = 0; s < 300; s++)); do
	bufs=$(fm_status_get "$T/mnt" .cache.buffers)
	dirty=$(fm_status_get "$T/mnt" .cache.dirty)
	if ((bufs > 0 && dirty * 4 >= bufs * 3)); then
		full=1
		break
	fi
	sleep 0.1
done
((full)) || fail "the cache never filled with dirty blocks ($dirty of $bufs dirty)"
log "cache: $dirty of $bufs buffers dirty; writers waiting on the slow leg"

# Reads of the other half: each answered, right bytes.
for ((k = 0; k < 40; k++)); do
	blk=$(((RANDOM * 32768 + RANDOM) % ((8 << 20) / 4096)))
	timeout -k 2 10 dd if="$img" of="$T/got" bs=4096 count=1 \
		skip=$(((HALF >> 12) + blk)) iflag=direct status=none ||
		fail "read $k (block $blk of the other half) not answered within 10 s during the stall"
	cmp -s "$T/got" <(dd if="$T/b.data" bs=4096 count=1 skip="$blk" status=none) ||
		fail "read $k (block $blk of the other half) returned wrong bytes"
done
dirty=$(fm_status_get "$T/mnt" .cache.dirty)
log "40 reads answered while $dirty buffers stayed dirty"

# A write around the cache into the other half, answered and read back.
head -c $((1 << 20)) /dev/urandom >"$T/w.data"
timeout -k 2 20 dd if="$T/w.data" of="$img" bs=1M seek=$(((HALF >> 20) + 16)) \
	oflag=direct conv=notrunc status=none ||
	fail "a 1 MiB write around the cache not answered within 20 s during the stall"
timeout -k 2 10 dd if="$img" of="$T/got" bs=1M count=1 skip=$(((HALF >> 20) + 16)) \
	iflag=direct status=none || fail "reading the written-around MiB back timed out"
cmp -s "$T/got" "$T/w.data" || fail "the written-around MiB reads back wrong"
pid_alive "${wpids[0]}" || fail "writer 0 ended early: $(cat "$T/fio0.log")"

fm_ok inject "$T/mnt" "$T/leg1" --clear
kill "${wpids[@]}" 2>/dev/null || true
for p in "${wpids[@]}"; do wait "$p" 2>/dev/null || true; done
fm_umount "$T/mnt"
assert_legs_equal "$T/leg0" "$T/leg1"
log "ok"

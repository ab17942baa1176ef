#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The FUSE transports (issue 10).  With the fuse module's enable_uring off,
# `mount --transport=uring` (and -o transport=uring) is refused before
# mounting, with a message naming the parameter, and the legs are left
# unchanged; a bad transport name is a usage error.  With it on, the image
# is served through io_uring: one queue per possible CPU in status, the
# queues' request counters grow with the I/O, nothing stays in flight,
# fio's crc32c verify passes at QD32, and umount is clean.  auto takes
# /dev/fuse on a machine with fewer than 8 possible CPUs and says so in its
# log (io_uring from 8).  On legs in memory, 4k reads and writes go
# around the cache, and without checksums reads are answered from the
# legs' mapping (io.mapped_replies), by splice where the mapping has a
# hole (io.spliced_reads); at QD1 a loop spins for the next request, but
# not for a client that thinks between requests, nor for two clients.  A
# queue whose CPU its client keeps busy with 4k
# QD32 leaves it (status "moves"); one serving 1M writes does not.
# The parameter is restored on every exit.
source "$(dirname "$0")/lib.sh"

fm_uring_param_hold
P=/sys/module/fuse/parameters/enable_uring
[[ -e $P ]] || fail "$P is missing: this kernel has no FUSE over io_uring"
saved=$(cat "$P")
fm_on_cleanup "echo $saved >$P"
FM_TRANSPORT=   # this test chooses the transport itself
SIZE=$((96 << 20))
cpus=$(($(sed -E 's/.*[-,]//' /sys/devices/system/cpu/possible) + 1))
fm_create --size "$SIZE" "$T/leg0" "$T/leg1"
mkdir -p "$T/mnt"
sum0=$(leg_sum "$T/leg0") sum1=$(leg_sum "$T/leg1")

log "enable_uring=N: transport=uring is refused before mounting"
echo N >"$P"
assert_exit 4 "transport uring: .*$P is N" \
	"$FM" mount --transport=uring "$T/leg0" "$T/leg1" "$T/mnt"
assert_not_mounted "$T/mnt"
assert_exit 4 "enable_uring" "$FM" mount -o transport=uring "$T/leg0" "$T/leg1" "$T/mnt"
assert_not_mounted "$T/mnt"
assert_exit 2 "transport=fuse: expected auto, uring or dev" \
	"$FM" mount -o transport=fuse "$T/leg0" "$T/leg1" "$T/mnt"
assert_exit 2 "--transport fuse: expected auto, uring or dev" \
	"$FM" mount --transport=fuse "$T/leg0" "$T/leg1" "$T/mnt"
assert_eq "$(leg_sum "$T/leg0") $(leg_sum "$T/leg1")" "$sum0 $sum1" "legs after the refusals"

log "enable_uring=Y: served through io_uring ($cpus queues)"
echo Y >"$P"
FM_TRANSPORT=uring fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
run_fio uring --filename="$T/mnt/image" --direct=1 --rw=randrw --bs=4k --iodepth=32 \
	--ioengine=io_uring --size=32M --io_size=48M --verify=crc32c --verify_fatal=1
run_fio uring1m --filename="$T/mnt/image" --direct=1 --rw=write --bs=1M --iodepth=4 \
	--ioengine=io_uring --offset=32M --size=32M --verify=crc32c --verify_fatal=1
q=$(fm_status_get "$T/mnt" .transport)
python3 - "$q" "$cpus" <<'PY' || fail "io_uring queues: $q"
import json, sys
t, cpus = json.loads(sys.argv[1]), int(sys.argv[2])
qs = t["queues"]
assert t["name"] == "uring", t
assert sorted(q["cpu"] for q in qs) == list(range(cpus)), qs
assert all(q["depth"] >= 32 for q in qs), qs
# 48M of 4k randrw + verify reads + 32M of 1M writes and their verify
assert sum(q["requests"] for q in qs) >= 12288 + 64, qs
assert all(q["in_flight"] == 0 for q in qs), qs
PY
fm status "$T/mnt" | grep -q "transport uring; per queue" || fail "status text shows no transport"
fm_umount "$T/mnt"
assert_legs_equal "$T/leg0" "$T/leg1"

# Run to completion: a queue thread's ring is a dmio loop, so the leg I/O
# of its requests completes on it and the reply is committed there -- no
# hand-off on a 4k/1M read hit, read miss, write into the cache, or write
# around it.  (The first write into a clean bitmap region waits for the
# bitmap thread; the warm-up sets those bits and bitmap_delay keeps them.
# The FLUSH of each close() is answered on the serving thread too: it only
# starts the write-back.)
#
# No allocation per request (issue 10): on both transports (io_uring
# queues, /dev/fuse event loops) the daemon runs under
# tests/helpers/fm_malloc_count, which counts the heap allocations of the
# threads that serve requests; once a first pass of every hot path has
# filled the free lists (and a 4k read pass the small cache), a second pass over other
# blocks -- ~2800 requests -- may allocate only for its FLUSHes (every
# close() of dd and fio sends one; it starts the write-back of what is
# dirty).  libfuse's own allocations are counted too: reads and writes
# do not go through libfuse on either transport (front_ring_handle() on
# io_uring, loop_serve() on /dev/fuse; before it, libfuse's calloc of a
# struct fuse_req per request had to be left out), and what does (open,
# flush, release, getattr of each dd and fio run: at most 5 per close())
# stays far below the ~2800 requests.
# Large I/O goes around the cache: the 1 MiB writes and reads of the
# second pass are counted by cache.around_{write,read}_bytes, not as cache
# writes or misses; and so does every read on a loop or io_uring queue
# (front.c): the 4k reads too, those of blocks the cache holds (the 4k
# writes) copied from it (cache.around_cached_bytes).
[[ -f ${FM_MALLOC_COUNT_LIB:-} ]] ||
	fail "FM_MALLOC_COUNT_LIB is not set to the fm_malloc_count helper (run through meson)"
img=$T/mnt/image
# hot_paths BASE_MIB: 1M write-around (8M), 1M reads around the (full)
# cache (8M), 4k reads around it (1M), 4k writes into the cache (1M) and
# 4k reads of them (QD1 and QD16), from BASE_MIB on.
hot_paths() {
	local b=$1
	dd if=/dev/urandom of="$img" bs=1M count=8 seek="$b" iflag=fullblock oflag=direct \
		conv=notrunc status=none
	dd if="$img" of=/dev/null bs=1M count=8 skip=$((b + 8)) iflag=direct status=none
	dd if="$img" of=/dev/null bs=4k count=256 skip=$(((b + 16) * 256)) iflag=direct status=none
	dd if=/dev/urandom of="$img" bs=4k count=256 seek=$(((b + 17) * 256)) iflag=fullblock \
		oflag=direct conv=notrunc status=none
	dd if="$img" of=/dev/null bs=4k count=256 skip=$(((b + 17) * 256)) iflag=direct status=none
	run_fio hits --filename="$img" --direct=1 --rw=randread --bs=4k --iodepth=16 \
		--ioengine=io_uring --offset=$((b + 17))M --size=1M --io_size=8M
}
handoffs() {
	fm_status_get "$T/mnt" .transport.queues |
		python3 -c 'import json,sys; print(sum(q["handoffs"] for q in json.load(sys.stdin)))'
}
allocs() { od -An -tu8 -N8 "$T/mallocs" | tr -d ' '; }
for tr in uring dev; do
	log "$tr: no hand-off, no allocation, large I/O around the cache on the hot paths"
	: >"$T/mallocs"
	skip="" per_close=5
	LD_PRELOAD=$FM_MALLOC_COUNT_LIB FM_MALLOC_COUNT_FILE=$T/mallocs \
		FM_MALLOC_COUNT_THREADS=main,fm-loop,fm-uring FM_MALLOC_COUNT_SKIP=$skip \
		FM_TRANSPORT=$tr fm_mount -o bitmap_delay=3600000,cache_size=4M,event_loop \
		"$T/leg0" "$T/leg1" "$T/mnt"
	dd if=/dev/urandom of="$img" bs=1M count=48 iflag=fullblock oflag=direct conv=notrunc \
		status=none
	# Fill the 4M cache with clean blocks (it grows on demand, and reads
	# no longer fill it): 6M of 4k writes that no pass reads again, and
	# their fsync (on the slow pool, before the count starts).
	dd if=/dev/urandom of="$img" bs=4k count=1536 seek=$((18 * 256)) iflag=fullblock \
		oflag=direct conv=notrunc,fsync status=none
	h0=$(handoffs) s0=$(fm_status_get "$T/mnt" .io.slow_jobs) f0=$(fm_status_get "$T/mnt" .io.flushes)
	hot_paths 0
	a0=$(allocs) m0=$(fm_status_get "$T/mnt" .cache.misses) f1=$(fm_status_get "$T/mnt" .io.flushes)
	ar0=$(fm_status_get "$T/mnt" .cache.around_read_bytes)
	aw0=$(fm_status_get "$T/mnt" .cache.around_write_bytes)
	ac0=$(fm_status_get "$T/mnt" .cache.around_cached_bytes)
	hot_paths 24
	a1=$(allocs) f2=$(fm_status_get "$T/mnt" .io.flushes)
	# 256 of the 4k writes (new blocks); 256 more if the 4k reads, 2048
	# more if the 1M reads had gone through the cache
	(($(fm_status_get "$T/mnt" .cache.misses) < m0 + 512)) ||
		fail "reads went through the cache"
	# The 4k reads of the blocks just written: from the cache.
	(($(fm_status_get "$T/mnt" .cache.around_cached_bytes) - ac0 >= (256 + 2048) * 4096)) ||
		fail "the 4k reads of cached blocks were not copied from the cache"
	assert_eq "$(($(fm_status_get "$T/mnt" .cache.around_read_bytes) - ar0))" $((9 << 20)) \
		"bytes of the 1M and 4k reads read around the cache"
	assert_eq "$(($(fm_status_get "$T/mnt" .cache.around_write_bytes) - aw0))" $((8 << 20)) \
		"bytes of the 1M writes written around the cache"
	(((a1 - a0) <= per_close * (f2 - f1))) ||
		fail "$tr: $((a1 - a0)) heap allocations on the serving threads over ~2800 requests" \
			"(only the requests of the $((f2 - f1)) close()s may allocate)"
	log "$tr: $((a1 - a0)) heap allocations over ~2800 requests, $((f2 - f1)) close()s"
	((f2 >= f0 + 12)) || fail "$tr: $((f2 - f0)) FLUSHes counted for 12 closes"
	assert_eq "$(($(fm_status_get "$T/mnt" .io.slow_jobs) - s0))" 0 \
		"$tr: requests given to the slow pool"
	# Legs on disk (/var/tmp) are not mapped: io_uring does their I/O.
	assert_eq "$(fm_status_get "$T/mnt" .engine.mapped_ios)" 0 "$tr: I/Os through a mapping of legs on disk"
	if [[ $tr == uring ]]; then
		assert_eq "$(($(handoffs) - h0))" 0 \
			"replies handed to a queue thread by another thread"
	fi
	fm_umount "$T/mnt"
	assert_legs_equal "$T/leg0" "$T/leg1"
done

# Legs in memory (tmpfs): on a loop a 4k read goes around the cache (a
# miss would copy RAM into RAM), and so does every whole block written, at
# QD1 as at QD32 (a cache buffer, its copy and its writeback cost more than
# two copies into the legs).
# The cache's default size there is 32 MiB: it holds only the dirty blocks.
# A write of part of a block goes through the cache, and so does a whole
# block written over such a dirty block; the reads copy those blocks from
# the cache and return every byte last written.
log "dev: legs on tmpfs: 4k reads and writes around the cache"
S=$(mktemp -d /dev/shm/fusemirror-transport.XXXXXX)
fm_on_cleanup "rm -rf $S"
fm_create --size 16M "$S/leg0" "$S/leg1"
FM_TRANSPORT=dev fm_mount "$S/leg0" "$S/leg1" "$T/mnt"
# (no cache_size given: legs in memory get 32 MiB, not 2% of RAM)
assert_eq "$(fm_status_get "$T/mnt" .cache.limit_bytes)" $((32 << 20)) "cache limit on legs in memory"
head -c $((5 << 20)) /dev/urandom >"$S/src"
head -c $((64 << 10)) /dev/urandom >"$S/src2"
st0=$(fm_status_get "$T/mnt" .engine.streamed_ios)
dd if="$S/src" of="$img" bs=1M count=4 oflag=direct conv=notrunc status=none
# Legs in memory: an event loop per CPU (loop 0 is the main thread, the
# others are named fm-loop); on disk legs half as many (read_depth.sh).
loops=$(cat /proc/"$FM_PID"/task/*/comm | grep -cx fm-loop || :)
assert_eq "$((loops + 1))" "$(getconf _NPROCESSORS_ONLN)" "event loops on legs in memory"
# 1 MiB writes: copied into each leg with streaming stores (map.c); all
# but the first, which the written-region map's thread issues once it has
# marked the region (a reaper leaves pieces over 64 KiB to io_uring).
st=$(($(fm_status_get "$T/mnt" .engine.streamed_ios) - st0))
((st >= 2 * 3)) || fail "only $st leg copies of 4 1M writes on 2 legs streamed"
m0=$(fm_status_get "$T/mnt" .cache.misses) ar0=$(fm_status_get "$T/mnt" .cache.around_read_bytes)
aw0=$(fm_status_get "$T/mnt" .cache.around_write_bytes) h0=$(fm_status_get "$T/mnt" .cache.hits)
rr0=$(fm_status_get "$T/mnt" .io.ring_replies) br0=$(fm_status_get "$T/mnt" .io.blocking_reads)
sp0=$(fm_status_get "$T/mnt" .io.spun_reads)
mi0=$(fm_status_get "$T/mnt" .engine.mapped_ios)
python3 - "$img" "$S/src" "$S/src2" "$S/want" "$S/out" <<'PY'
import mmap, os, sys
img, src, src2, want, out = sys.argv[1:]
data = bytearray(open(src, "rb").read())
new = open(src2, "rb").read()
fd = os.open(img, os.O_RDWR | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)
def put(off, b):
    buf[:len(b)] = b
    os.pwritev(fd, [memoryview(buf)[:len(b)]], off)
    data[off:off + len(b)] = b
for i in range(1024, 1280):             # whole blocks: around the cache
    put(i * 4096, data[i * 4096:(i + 1) * 4096])
for k, i in enumerate(range(1200, 1208)):       # 1 KiB at +1 KiB of 8 blocks
    put(i * 4096 + 1024, new[k * 1024:(k + 1) * 1024])
for k, i in enumerate(range(1200, 1204)):       # whole blocks over 4 dirty ones
    put(i * 4096, new[16384 + k * 4096:16384 + (k + 1) * 4096])
open(want, "wb").write(data)
with open(out, "wb") as o:
    for i in range(1280):
        os.preadv(fd, [buf], i * 4096)
        o.write(buf)
os.close(fd)
PY
cmp "$S/want" "$S/out" || fail "4k reads around the cache returned other bytes"
# every 4k request, read one at a time, was waited for in a blocking read
# (answered by writev) or, before the loop settled in that, polled for
# and answered on its ring (the bytes they carried are compared above)
br=$(($(fm_status_get "$T/mnt" .io.blocking_reads) - br0))
rr=$(($(fm_status_get "$T/mnt" .io.ring_replies) - rr0))
((br + rr >= 256 + 1280)) ||
	fail "replies of 4k reads and writes neither after a blocking read nor on the rings ($br, $rr)"
((br >= (256 + 1280) * 3 / 4)) ||
	fail "only $br of 1536 4k requests at QD1 were waited for in a blocking read"
# ... most of them while the loop spun for the next (spin_us, default 30:
# this client sends its next request within microseconds of a reply)
sp=$(($(fm_status_get "$T/mnt" .io.spun_reads) - sp0))
log "dev: $sp of $br 4k requests read at QD1 were read while spinning"
((sp >= br / 2)) || fail "only $sp of $br 4k requests at QD1 were read while the loop spun"
assert_eq "$(($(fm_status_get "$T/mnt" .cache.around_write_bytes) - aw0))" $((1 << 20)) \
	"bytes of the 256 whole-block 4k writes written around the cache"
# Legs on tmpfs are mapped (src/dmio/map.c): the leg I/O of those writes
# (2 x 256) and of the reads of the 1272 blocks the legs hold is a copy
# through the mapping, none faulted.
mi=$(($(fm_status_get "$T/mnt" .engine.mapped_ios) - mi0))
log "dev: $mi leg I/Os of the 4k requests through the legs' mappings"
((mi >= 2 * 256 + 1272)) || fail "only $mi leg I/Os of 4k requests through the legs' mappings"
assert_eq "$(fm_status_get "$T/mnt" .engine.map_faults)" 0 "copies through the legs' mappings that faulted"
# the 8 partial writes miss (read, modify); the 4 whole blocks hit them
(($(fm_status_get "$T/mnt" .cache.misses) - m0 >= 8)) ||
	fail "the partial writes did not go through the cache"
(($(fm_status_get "$T/mnt" .cache.hits) - h0 >= 4)) ||
	fail "the 4k writes over dirty blocks did not go through the cache"
# 5 MiB from the legs but the 8 blocks the cache holds, copied from it
assert_eq "$(($(fm_status_get "$T/mnt" .cache.around_read_bytes) - ar0))" $(((5 << 20) - 8 * 4096)) \
	"bytes of the 4k reads read from the legs around the cache"
# The spin backs off.  A client that thinks 200 us between its requests:
# after up to 32 long waits a loop spins for it only every 32nd (a fixed
# window spun 30 us for nothing before each: ~250); two threads taking turns, each request from
# another caller than the one before: no loop spins for them (the spinner
# served both while the other loops waited, 15% slower than without it).
sm0=$(fm_status_get "$T/mnt" .io.spin_misses) br0=$(fm_status_get "$T/mnt" .io.blocking_reads)
python3 - "$img" <<'PY'
import mmap, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)
for i in range(256):
    os.preadv(fd, [buf], i * 4096)
    time.sleep(0.0002)
os.close(fd)
PY
br=$(($(fm_status_get "$T/mnt" .io.blocking_reads) - br0))
sm=$(($(fm_status_get "$T/mnt" .io.spin_misses) - sm0))
log "dev: $sm spins of 30 us ended without a request, of $br 4k reads 200 us apart"
((sm <= br / 4)) || fail "$sm of $br spins ended without a request for reads 200 us apart"
br0=$(fm_status_get "$T/mnt" .io.blocking_reads) sp0=$(fm_status_get "$T/mnt" .io.spun_reads)
python3 - "$img" <<'PY'
import mmap, os, sys, threading
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
turn = [threading.Semaphore(1), threading.Semaphore(0)]
def reader(me):
    buf = mmap.mmap(-1, 4096)
    for i in range(512):
        turn[me].acquire()
        os.preadv(fd, [buf], (2 * i + me) % 1280 * 4096)
        turn[1 - me].release()
ts = [threading.Thread(target=reader, args=(k,)) for k in (0, 1)]
for t in ts: t.start()
for t in ts: t.join()
os.close(fd)
PY
br=$(($(fm_status_get "$T/mnt" .io.blocking_reads) - br0))
sp=$(($(fm_status_get "$T/mnt" .io.spun_reads) - sp0))
log "dev: $sp of $br 4k reads of two threads taking turns read while spinning"
((sp <= br / 8)) || fail "$sp of $br 4k reads of two threads taking turns were read while a loop spun"
# A queue of 4k writes (each block once, none dirty): every one around;
# their replies and those of the verify's 4k reads go on the loops' rings
# too, in batches (but for a reply whose loop's 32 slots were out: 2045 of
# 2048 measured; when only a loop reading one request per wake-up put them
# there, 251 to over 1536 in runs here, as the requests trickled in).  A
# loop that found one request at a time twice in a row waits for the next
# in a blocking read and answers it by writev(): at the job's edges, and
# now and then in it, as the queue drains (up to 99 of 2048 in runs here),
# so those count with the ring's.
aw0=$(fm_status_get "$T/mnt" .cache.around_write_bytes)
rr0=$(fm_status_get "$T/mnt" .io.ring_replies)
br0=$(fm_status_get "$T/mnt" .io.blocking_reads)
run_fio qd32-dev --filename="$img" --direct=1 --rw=randwrite --bs=4k --iodepth=32 \
	--ioengine=io_uring --offset=8M --size=4M --verify=crc32c --verify_fatal=1
assert_eq "$(($(fm_status_get "$T/mnt" .cache.around_write_bytes) - aw0))" $((4 << 20)) \
	"bytes of the QD32 4k writes written around the cache"
rr=$(($(fm_status_get "$T/mnt" .io.ring_replies) - rr0))
br=$(($(fm_status_get "$T/mnt" .io.blocking_reads) - br0))
log "dev: $rr of 2048 replies of QD32 4k writes and reads on the loops' rings, $br after blocking reads"
((rr + br >= 2000)) ||
	fail "$rr of 2048 replies of QD32 4k writes and reads on the loops' rings, $br after blocking reads"
# These legs have checksums: every read is verified, none is spliced (512k
# reads: they would fit the daemon's pipe).
cmp <(dd if="$img" bs=512k count=10 iflag=direct status=none) "$S/want" ||
	fail "512k reads with checksums returned other bytes"
assert_eq "$(fm_status_get "$T/mnt" .io.spliced_reads)" 0 "reads spliced with checksums"

fm_umount "$T/mnt"
assert_legs_equal "$S/leg0" "$S/leg1"
cmp <(dd if="$S/leg0" bs=1M count=5 skip="$(data_offset_of "$S/leg0")" iflag=skip_bytes \
	status=none) "$S/want" || fail "the legs do not hold the bytes last written"

# On an io_uring queue likewise: 4k writes go around the cache, one at a
# time (QD1) as in a queue (QD32).
log "uring: legs on tmpfs: QD1 and QD32 4k writes around the cache"
FM_TRANSPORT=uring fm_mount "$S/leg0" "$S/leg1" "$T/mnt"
aw0=$(fm_status_get "$T/mnt" .cache.around_write_bytes)
head -c $((1 << 20)) /dev/urandom >"$S/src3"
dd if="$S/src3" of="$img" bs=4k seek=256 oflag=direct conv=notrunc status=none
dd if="$S/src3" of="$S/want" bs=4k seek=256 conv=notrunc status=none
aw=$(($(fm_status_get "$T/mnt" .cache.around_write_bytes) - aw0))
((aw >= 250 * 4096)) || fail "io_uring: $aw bytes of 256 QD1 4k writes around the cache"
cmp <(dd if="$img" bs=1M count=5 iflag=direct status=none) "$S/want" ||
	fail "io_uring: the image after 4k writes around the cache"
aw0=$(fm_status_get "$T/mnt" .cache.around_write_bytes)
run_fio qd32-uring --filename="$img" --direct=1 --rw=randwrite --bs=4k --iodepth=32 \
	--ioengine=io_uring --offset=12M --size=4M --verify=crc32c --verify_fatal=1
assert_eq "$(($(fm_status_get "$T/mnt" .cache.around_write_bytes) - aw0))" $((4 << 20)) \
	"io_uring: bytes of the QD32 4k writes written around the cache"
# A queue whose CPU its client keeps busy (fio pinned there, 4k QD32) leaves
# it for a while ("moves"); one serving 1M writes (~200 us of CPU each,
# best near the client's caches) never does, however busy the CPU.
if (($(nproc) >= 2)); then
	m0=$(fm_status_get "$T/mnt" '.transport.queues[0].moves')
	run_fio move-1m --filename="$img" --direct=1 --rw=write --bs=1M --iodepth=8 \
		--ioengine=io_uring --offset=8M --size=8M --time_based --runtime=1 \
		--cpus_allowed=0
	assert_eq "$(fm_status_get "$T/mnt" '.transport.queues[0].moves')" "$m0" \
		"io_uring: moves of queue 0 serving 1M writes"
	run_fio move-4k --filename="$img" --direct=1 --rw=randwrite --bs=4k --iodepth=32 \
		--ioengine=io_uring --offset=8M --size=8M --time_based --runtime=2 \
		--cpus_allowed=0
	m=$(fm_status_get "$T/mnt" '.transport.queues[0].moves')
	((m > m0)) || fail "io_uring: queue 0 never left CPU 0 under 4k QD32 from it ($m0 -> $m)"
	fm status "$T/mnt" | grep -q "hand-offs, moves" || fail "status text shows no moves"
fi
fm_umount "$T/mnt"
assert_legs_equal "$S/leg0" "$S/leg1"

# Legs in memory, no checksums (they must verify every read): a read on a
# loop is answered from the legs' mapping (front.c, read_mapped()): one
# write of the reply's header and the leg's own bytes, whose copy by the
# kernel into the reader's pages is the only one, and returns the bytes
# just written: 1M writes around the cache, 2k ones through it (dirty
# blocks in the range refuse the mapping: the read copies them from the
# cache instead); 4k reads alike, at QD1 (the loop's blocking clone, by
# writev) and at QD32 (on the loop's ring).  The daemon's pipe for a
# spliced 1 MiB reply (a range with a hole, below) is 2 MiB, above
# pipe-max-size unless it has CAP_SYS_RESOURCE (this machine's root has
# not): raised for the mount.
log "dev: legs on tmpfs, no checksums: reads answered from the legs' mapping"
fm_create --checksums=no --size 16M "$S/leg2" "$S/leg3"
pms=$(cat /proc/sys/fs/pipe-max-size)
fm_on_cleanup "echo $pms >/proc/sys/fs/pipe-max-size"
((pms >= 2 << 20)) || echo $((2 << 20)) >/proc/sys/fs/pipe-max-size
FM_TRANSPORT=dev FM_TEST_FOREGROUND=1 fm_mount "$S/leg2" "$S/leg3" "$T/mnt"
echo "$pms" >/proc/sys/fs/pipe-max-size
! grep -q "not spliced\|take two copies\|no read is spliced" "$FM_LOG" ||
	fail "a 2 MiB pipe allowed, yet the mount says reads are not spliced: $(cat "$FM_LOG")"
head -c $((16 << 20)) /dev/urandom >"$S/src16"
dd if="$S/src16" of="$img" bs=1M oflag=direct conv=notrunc status=none
dd if="$img" of="$S/out" bs=1M iflag=direct status=none
cmp "$S/out" "$S/src16" || fail "1M reads right after 1M writes"
assert_eq "$(fm_status_get "$T/mnt" .io.mapped_replies)" 16 "1M reads from the legs' mapping"
assert_eq "$(fm_status_get "$T/mnt" .io.spliced_reads)" 0 "1M reads spliced over a mapping"
# 2k writes (partial blocks: through the cache) into MiB 8, then a 1M read
# of it on the same fd: the blocks still dirty refuse the splice (the read
# copies them from the cache; how many are still dirty depends on the
# write-back's pace), the bytes are the new ones either way.  After an
# fsync they are clean and still cached, and a clean block holds what the
# legs do: from the mapping.
n=$(python3 - "$img" "$S/src" "$S/src16" "$FM" "$T/mnt" <<'PY'
import mmap, os, subprocess, sys, json
img, src, src16, fm, mnt = sys.argv[1:]
new = open(src, "rb").read()[4 << 20:5 << 20]
def status():
    out = subprocess.run([fm, "status", "--json", mnt], check=True, capture_output=True).stdout
    return json.loads(out)
def mapped():
    return status()["io"]["mapped_replies"]
fd = os.open(img, os.O_RDWR | os.O_DIRECT)
buf, big = mmap.mmap(-1, 2048), mmap.mmap(-1, 1 << 20)
for i in range(512):
    buf[:] = new[i * 2048:(i + 1) * 2048]
    os.pwritev(fd, [buf], (8 << 20) + i * 2048)
assert os.preadv(fd, [big], 8 << 20) == 1 << 20
assert big[:] == new, "a 1M read right after 4k writes returned other bytes"
os.fsync(fd)
st = status()
assert st["cache"]["buffers"] >= 256 and st["cache"]["dirty"] == 0, st["cache"]
s0 = st["io"]["mapped_replies"]
assert os.preadv(fd, [big], 8 << 20) == 1 << 20
assert big[:] == new, "a 1M read of clean cached blocks returned other bytes"
assert mapped() == s0 + 1, "a 1M read of clean cached blocks was not from the mapping"
os.close(fd)
print(s0 + 1)
with open(src16, "r+b") as f:
    f.seek(8 << 20)
    f.write(new)
PY
) || fail "1M reads after 4k writes"
((n == 17 || n == 18)) || fail "$n reads from the mapping, want 17 or 18"
run_fio mapped --filename="$img" --direct=1 --rw=read --bs=1M --iodepth=8 \
	--ioengine=io_uring --size=16M
assert_eq "$(fm_status_get "$T/mnt" .io.mapped_replies)" $((n + 16)) "1M reads from the mapping"
assert_eq "$(fm_status_get "$T/mnt" .io.mapped_reply_bytes)" $(((n + 16) << 20)) \
	"bytes of the reads from the mapping"
cmp "$S/src16" <(dd if="$img" bs=1M iflag=direct status=none) || fail "the image read by 1M reads"
# 4k reads: at QD1 (dd) and at QD32 (fio), every one from the mapping
# (dd's last read, at the end of the image, has no bytes to answer).
m0=$(fm_status_get "$T/mnt" .io.mapped_replies)
cmp "$S/src16" <(dd if="$img" bs=4k iflag=direct status=none) || fail "the image read by 4k reads"
run_fio mapped4k --filename="$img" --direct=1 --rw=randread --bs=4k --iodepth=32 \
	--ioengine=io_uring --size=16M
m=$(($(fm_status_get "$T/mnt" .io.mapped_replies) - m0))
assert_eq "$m" $((4096 + 4096)) "4k reads from the mapping"
assert_eq "$(fm_status_get "$T/mnt" .io.spliced_reads)" 0 "reads spliced over a mapping"
fm_umount "$T/mnt"
assert_legs_equal "$S/leg2" "$S/leg3"

# A range the mapping refuses (a discard punched holes in the legs: a read
# through the mapping would allocate pages there) is spliced instead.
# Without CAP_SYS_RESOURCE (dropped here; a root in a container may lack it
# anyway) and at the default pipe-max-size (1 MiB), the pipe takes replies
# of up to 1016 KiB: the mount says so, 1M reads take the usual way and
# 512k ones are still spliced.
log "dev: pipe-max-size 1 MiB, no CAP_SYS_RESOURCE: the mount says 1M reads are not spliced"
printf '#!/bin/sh\nexec setpriv --bounding-set=-sys_resource %q "$@"\n' "$FM" >"$T/fm-nores"
chmod +x "$T/fm-nores"
echo $((1 << 20)) >/proc/sys/fs/pipe-max-size
FM=$T/fm-nores FM_TRANSPORT=dev FM_TEST_FOREGROUND=1 fm_mount "$S/leg2" "$S/leg3" "$T/mnt"
echo "$pms" >/proc/sys/fs/pipe-max-size
grep -q "reads of more than 1016 KiB take two copies, not one (splice): their pipe of 2097152 bytes needs CAP_SYS_RESOURCE or /proc/sys/fs/pipe-max-size >= 2097152" "$FM_LOG" ||
	fail "the mount did not say 1M reads are not spliced: $(cat "$FM_LOG")"
fallocate --punch-hole --keep-size --offset $((4 << 20)) --length $((4 << 20)) "$img"
cmp <(dd if="$img" bs=1M skip=4 count=4 iflag=direct status=none) <(head -c $((4 << 20)) /dev/zero) ||
	fail "1M reads of a hole without a pipe for them"
assert_eq "$(fm_status_get "$T/mnt" .io.spliced_reads)" 0 "1M reads spliced into a 1 MiB pipe"
cmp <(dd if="$img" bs=512k skip=8 count=8 iflag=direct status=none) <(head -c $((4 << 20)) /dev/zero) ||
	fail "512k reads of a hole by splice"
assert_eq "$(fm_status_get "$T/mnt" .io.spliced_reads)" 8 "512k reads spliced into a 1 MiB pipe"
assert_eq "$(fm_status_get "$T/mnt" .io.mapped_replies)" 0 "reads of a hole from the mapping"
cmp <(dd if="$img" bs=512k count=8 iflag=direct status=none) <(head -c $((4 << 20)) "$S/src16") ||
	fail "512k reads from the mapping"
assert_eq "$(fm_status_get "$T/mnt" .io.mapped_replies)" 8 "512k reads from the mapping"
fm_umount "$T/mnt"

# Legs on disk: a loop submits the leg reads of a batch of requests every
# 2 requests read (front.c, loop_read()), not all with the enter that ends
# its turn; so at QD32 the system calls that carried leg I/O number at
# least 2 in 5 of the SQEs (2362-2422 of 4096 measured; all in one enter
# per batch, 902).  The one always-polling loop that reads its requests
# on its ring (io.ring_reads; front.c, loop_arm_reads()) submits every 4
# requests so read, the 4th request's leg read among them: at least one
# system call per 4 SQEs (1049 of 4096 measured).
log "dev: legs on disk, 4k QD32 reads: leg reads submitted as the batch is read"
FM_TRANSPORT=dev fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
dd if=/dev/urandom of="$img" bs=1M count=8 seek=40 iflag=fullblock oflag=direct conv=notrunc \
	status=none
sq0=$(fm_status_get "$T/mnt" .engine.sqes) su0=$(fm_status_get "$T/mnt" .engine.submits)
rr0=$(fm_status_get "$T/mnt" .io.ring_reads)
run_fio qd32disk --filename="$img" --direct=1 --rw=randread --bs=4k --iodepth=32 \
	--ioengine=io_uring --offset=40M --size=8M --io_size=16M
sq=$(($(fm_status_get "$T/mnt" .engine.sqes) - sq0))
su=$(($(fm_status_get "$T/mnt" .engine.submits) - su0))
log "dev: $sq SQEs in $su system calls for 4096 4k reads at QD32"
((sq >= 4096)) || fail "only $sq SQEs for 4096 4k reads on disk legs"
rr=$(($(fm_status_get "$T/mnt" .io.ring_reads) - rr0))
if ((rr > 0)); then
	((rr * 10 >= 4096 * 9)) || fail "only $rr of 4096 reads were read on the loop's ring"
	((4 * su >= sq)) || fail "$sq leg SQEs went in only $su system calls (not every 4 requests read on the ring?)"
else
	((5 * su >= 2 * sq)) || fail "$sq leg SQEs went in only $su system calls (batched to the turn's end?)"
fi
fm_umount "$T/mnt"
assert_legs_equal "$T/leg0" "$T/leg1"

log "auto on $cpus possible CPUs"
FM_TEST_FOREGROUND=1 fm_mount --transport=auto "$T/leg0" "$T/leg1" "$T/mnt"
want=dev
((cpus >= 8)) && want=uring
assert_eq "$(fm_status_get "$T/mnt" .transport.name)" "$want" "the transport auto took"
if [[ $want == dev ]]; then
	grep -q "transport=auto: $cpus CPUs (io_uring from 8" "$FM_LOG" ||
		fail "auto did not say why it took /dev/fuse: $(cat "$FM_LOG")"
fi
assert_eq "$(dd if="$T/mnt/image" bs=1M iflag=direct status=none | sha256sum | cut -d' ' -f1)" \
	"$(data_sum "$T/leg0")" "the image read on the auto transport"
fm_umount "$T/mnt"

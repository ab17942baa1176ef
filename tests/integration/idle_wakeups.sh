#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# An idle mounted daemon sleeps: its threads' voluntary context switches
# (/proc/PID/task/*/status), summed over WINDOW seconds, stay under BOUND
#   - right after the mount (nothing cached, nothing dirty);
#   - with dirty blocks in the cache (a writer holds the image open, so no
#     close() writes them back) whose writeback_age is far off;
#   - after those blocks were written back by their age (writeback_age=2):
#     the write-back comes in time (the cleaner does not sleep through a
#     deadline), and once the bitmap bits it set are cleared (passes that
#     end) the daemon sleeps again;
#   - after 4k reads one at a time on legs in memory (/dev/shm) over
#     /dev/fuse, which the loop read while spinning for the next (spin_us):
#     the spin ends, and the daemon burns no CPU either (at most CPU_BOUND
#     clock ticks over WINDOW seconds: a spinning thread makes no
#     voluntary switches).
# Threads whose periodic tick is not gone yet are named in IDLE_EXEMPT (a
# regex of thread names), reported but not counted.
source "$(dirname "$0")/lib.sh"

WINDOW=3
BOUND=1
CPU_BOUND=3
IDLE_EXEMPT=${IDLE_EXEMPT-}
mkdir "$T/mnt"
fm_create --size $((64 << 20)) "$T/leg0" "$T/leg1"

# idle_switches PID: the summed voluntary context switches of PID's
# threads not named by IDLE_EXEMPT; each thread's count on stderr.
idle_switches() {
	local f n sum=0 name
	for f in /proc/"$1"/task/*; do
		name=$(cat "$f/comm" 2>/dev/null) || continue
		n=$(awk '/^voluntary_ctxt_switches/ {print $2}' "$f/status" 2>/dev/null) || continue
		[[ -n $n ]] || continue
		printf '%s:%s:%s ' "${f##*/}" "$name" "$n" >&2
		[[ -n $IDLE_EXEMPT && $name =~ $IDLE_EXEMPT ]] && continue
		sum=$((sum + n))
	done
	echo >&2
	echo "$sum"
}

# cpu_ticks PID: its user + system clock ticks, all threads
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

# assert_sleeps PID WHAT: at most BOUND switches and CPU_BOUND ticks of
# CPU over WINDOW seconds.
assert_sleeps() {
	local a b c0 c1
	a=$(idle_switches "$1" 2>"$T/before")
	c0=$(cpu_ticks "$1")
	sleep "$WINDOW"
	c1=$(cpu_ticks "$1")
	b=$(idle_switches "$1" 2>"$T/after")
	log "$2: $((c1 - c0)) clock ticks of CPU in $WINDOW s"
	(((c1 - c0) <= CPU_BOUND)) ||
		fail "$2: $((c1 - c0)) clock ticks of CPU in $WINDOW s, more than $CPU_BOUND"
	log "$2: $((b - a)) voluntary switches in $WINDOW s (not counted: /$IDLE_EXEMPT/)"
	log "  before: $(cat "$T/before")"
	log "  after:  $(cat "$T/after")"
	(((b - a) <= BOUND)) ||
		fail "$2: $((b - a)) voluntary context switches in $WINDOW s, more than $BOUND"
}

cache_dirty() { fm_status_get "$T/mnt" .cache.dirty; }

# A writer that writes 256 KiB (4 KiB at a time), reports, then holds
# the image open until its fifo is written (or it is killed).
start_writer() {
	rm -f "$T/go" "$T/done"
	mkfifo "$T/go" "$T/done"
	python3 - "$T/mnt/image" "$T/done" "$T/go" <<'PY' &
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
for i in range(64):     # small writes: into the cache (large ones go around)
    os.pwrite(fd, os.urandom(4096), (8 << 20) + i * 4096)
with open(sys.argv[2], "w") as f:
    f.write("written\n")
open(sys.argv[3]).read()
os.close(fd)
PY
	WPID=$!
	[[ $(timeout 30 cat "$T/done") == written ]] || fail "the writer did not write"
}
stop_writer() {
	echo go >"$T/go"
	wait "$WPID" || fail "the writer failed"
}

log "idle after the mount"
fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
sleep 1
assert_sleeps "$FM_PID" "idle"

log "dirty blocks, writeback_age far off"
start_writer
d=$(cache_dirty)
((d > 0)) || fail "nothing dirty in the cache after the write ($d)"
sleep 1
assert_sleeps "$FM_PID" "dirty, then idle"
d=$(cache_dirty)
((d > 0)) || fail "the dirty blocks were written back before their age ($d)"
stop_writer
fm_umount "$T/mnt"

log "dirty blocks, writeback_age=2"
fm_mount -o writeback_age=2 "$T/leg0" "$T/leg1" "$T/mnt"
sleep 1
start_writer
t0=$(date +%s%N)
d=$(cache_dirty)
((d > 0)) || fail "nothing dirty in the cache after the write ($d)"
for ((i = 0; i < 100; i++)); do
	d=$(cache_dirty)
	((d == 0)) && break
	sleep 0.1
done
ms=$((($(date +%s%N) - t0) / 1000000))
log "written back by age after $ms ms"
((d == 0)) || fail "$d blocks still dirty ${ms} ms after the write (writeback_age=2)"
((ms >= 1500)) || fail "written back after $ms ms, before writeback_age=2"
# The write-back set bitmap bits, which the bitmap thread clears in
# passes (bitmap_delay): a wake-up that ends; wait for it.
for ((i = 0; i < 300; i++)); do
	[[ $(fm_bitmap_get "$T/mnt" set) == 0 ]] && break
	sleep 0.1
done
assert_eq "$(fm_bitmap_get "$T/mnt" set)" 0 "bitmap bits set 30 s after the write-back"
sleep 1
assert_sleeps "$FM_PID" "written back by age, then idle"
stop_writer
fm_umount "$T/mnt"

log "4k reads one at a time on legs in memory, /dev/fuse (spin_us)"
S=$(mktemp -d /dev/shm/fusemirror-idle.XXXXXX)
fm_on_cleanup "rm -rf $S"
fm_create --size $((16 << 20)) "$S/leg0" "$S/leg1"
FM_TRANSPORT=dev fm_mount "$S/leg0" "$S/leg1" "$T/mnt"
dd if=/dev/urandom of="$T/mnt/image" bs=1M count=4 oflag=direct conv=notrunc status=none
python3 - "$T/mnt/image" <<'PY'
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)
for k in range(4):
    for i in range(1024):
        os.preadv(fd, [buf], i * 4096)
os.close(fd)
PY
sp=$(fm_status_get "$T/mnt" .io.spun_reads)
log "$sp of 4096 4k reads read while a loop spun"
((sp > 0)) || fail "no 4k read at QD1 on legs in memory was read while a loop spun"
sleep 1
assert_sleeps "$FM_PID" "4k reads at QD1 on legs in memory, then idle"
fm_umount "$T/mnt"
log "ok"

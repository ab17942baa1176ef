#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# I/O semantics of the image, with cache_mode=writeback and writethrough:
#   - writethrough: once a write returns (file still open, no fsync, no
#     close), its bytes are on both legs' files (read with O_DIRECT at
#     data_offset + offset) and nothing is dirty in the cache; the same
#     for fallocate's zero range and punch hole, and one with whole blocks
#     flushed the legs (their discard or write-zeroes carries no FUA);
#   - writeback (writeback_age=0): a write returns with the data dirty in
#     the cache; after fsync it is on both legs; close() (FUSE flush, no
#     fsync) starts writing the dirty blocks back: soon on both legs, with
#     no fsync counted and (event loops) nothing given to the slow pool;
#   - unaligned I/O with dd (bs=777, 4097, 1, 1M at odd offsets,
#     overlapping, conv=notrunc), compared with a reference file, and
#     unaligned reads with skip;
#   - reads past the end are short (exactly the remaining bytes), a read at
#     or beyond the end returns nothing; writes at or past the end fail with
#     ENOSPC ("No space left on device"); a write that crosses the end is
#     short; the size never changes (truncate: EPERM, fallocate: ENOSPC,
#     O_TRUNC ignored: dd without conv=notrunc);
#   - fallocate --punch-hole and --zero-range (unaligned) read back zeroes,
#     and the data around them is untouched;
#   - overlapping concurrent writers (fio, 4 jobs) leave both legs equal;
#   - after fusemirror umount and mount, the image equals the reference,
#     and so do both legs' data areas;
#   - with the smallest cache (cache_size=1M: 256 blocks), 8 readers of
#     unaligned 1 MiB ranges that go through the cache (writers keep a
#     block of each cached) all finish and read the right bytes: a read
#     must not hold part of the cache while it waits for the rest (it did,
#     and such readers waited for one another for ever).
source "$(dirname "$0")/lib.sh"

SIZE=$((64 << 20))
head -c $((4 << 20)) /dev/urandom >"$T/src"

# ddboth DD-ARGS...: the same dd on the image and on the reference file.
ddboth() {
	dd if="$T/src" of="$img" conv=notrunc status=none "$@" || fail "dd $* on the image failed"
	dd if="$T/src" of="$T/ref" conv=notrunc status=none "$@"
}

# readcmp DD-ARGS...: the same read from the image and the reference.
readcmp() {
	dd if="$img" of="$T/got" status=none "$@" || fail "dd $* from the image failed"
	dd if="$T/ref" of="$T/want" status=none "$@"
	cmp "$T/got" "$T/want" || fail "dd $* reads differently from the image and the reference"
}

# durability MODE: the write/fsync promises, checked on the legs while the
# image is open.  The image is held open by a writer process that never
# forks: every close of a descriptor of the image, also the close-on-exec
# of a copy inherited by a child, sends FUSE flush, which writes the cache
# back and would hide the difference between the modes.
durability() {
	python3 - "$1" "$img" "$T/mnt" "$FM" "$T" "$T/leg0" "$T/leg1" <<'PY'
import json, mmap, os, struct, subprocess, sys, time
mode, img, mnt, fm, tmp, *legs = sys.argv[1:]

WRITER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "w":
        with open(cmd[2], "rb") as f:
            n = os.pwrite(fd, f.read(), int(cmd[1]))
        print("ok", n, flush=True)
    elif cmd[0] == "s":
        os.fsync(fd)
        print("ok", flush=True)
    elif cmd[0] == "c":
        os.close(fd)
        fd = os.open(sys.argv[1], os.O_RDWR)
        print("ok", flush=True)
    elif cmd[0] == "z":
        # fallocate(fd, mode, off, len): os has no punch or zero range
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        if libc.fallocate(fd, int(cmd[1]), int(cmd[2]), int(cmd[3])):
            print("errno", ctypes.get_errno(), flush=True)
        else:
            print("ok", flush=True)
os.close(fd)
"""
w = subprocess.Popen([sys.executable, "-c", WRITER, img], stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, text=True, close_fds=True)

def writer(cmd):
    w.stdin.write(cmd + "\n")
    w.stdin.flush()
    reply = w.stdout.readline().split()
    if not reply or reply[0] != "ok":
        sys.exit(f"{mode}: the writer failed on '{cmd}'")
    return reply

def pwrite(data, off):
    path = os.path.join(tmp, "chunk")
    with open(path, "wb") as f:
        f.write(data)
    n = int(writer(f"w {off} {path}")[1])
    if n != len(data):
        sys.exit(f"{mode}: write of {len(data)} bytes at {off} returned {n}")

def status():
    out = subprocess.run([fm, "status", "--json", mnt], check=True, capture_output=True).stdout
    return json.loads(out)

def dirty():
    j = status()
    return j["cache"]["dirty"], j["io"]["fsyncs"]

def on_leg(leg, off, n):
    with open(leg, "rb") as f:
        doff = struct.unpack("<Q", f.read(4096)[88:96])[0]
    a = (doff + off) // 4096 * 4096
    e = (doff + off + n + 4095) // 4096 * 4096
    buf = mmap.mmap(-1, e - a)      # page-aligned, as O_DIRECT needs
    fd = os.open(leg, os.O_RDONLY | os.O_DIRECT)
    try:
        got = os.preadv(fd, [buf], a)
    finally:
        os.close(fd)
    assert got == e - a, f"short O_DIRECT read of {leg}"
    return bytes(buf[doff + off - a: doff + off - a + n])

def check_legs(data, off, when, want=True):
    for leg in legs:
        if (on_leg(leg, off, len(data)) == data) != want:
            sys.exit(f"{mode}: {when}, {leg} {'does not hold' if want else 'already holds'} "
                     f"the data written at {off}")

off, data = 5 * (1 << 20) + 4095, os.urandom((1 << 20) + 333)
pwrite(data, off)
d, fsyncs0 = dirty()
if mode == "writethrough":
    check_legs(data, off, "once the write returned (no fsync, file open)")
    if d != 0:
        sys.exit(f"writethrough: {d} dirty blocks in the cache after the write returned")
    # The legs follow every write, not only the first.
    data2 = os.urandom(10000)
    pwrite(data2, off + 777)
    check_legs(data2, off + 777, "after an overwrite returned")
    d, fsyncs = dirty()
    if d != 0:
        sys.exit(f"writethrough: {d} dirty blocks in the cache after an overwrite")
    # fallocate too: zeroes on the legs once it returns, nothing dirty, and
    # with whole blocks a flush of the legs (the mirror's discard and
    # write-zeroes carry no FUA).  KEEP_SIZE 1, PUNCH_HOLE 2, ZERO_RANGE 0x10.
    for what, fmode, zoff, zlen, whole in (
            ("zero range", 0x10, off + 8192 + 100, 3 * 4096 + 200, True),
            ("punch hole", 3, off + 65536 + 5, 40000, True),
            ("zero range inside a block", 0x10, off + 200000 + 800, 1000, False)):
        f0 = status()["io"]["leg_flushes"]
        writer(f"z {fmode} {zoff} {zlen}")
        check_legs(bytes(zlen), zoff, f"once a {what} returned")
        j = status()
        if j["cache"]["dirty"] != 0:
            sys.exit(f"writethrough: {j['cache']['dirty']} dirty blocks in the cache "
                     f"after a {what}")
        if whole and j["io"]["leg_flushes"] <= f0:
            sys.exit(f"writethrough: a {what} returned without a flush of the legs")
else:
    if d == 0:
        sys.exit("writeback: nothing dirty in the cache after a write (not write-back?)")
    check_legs(data, off, "before fsync (writeback_age=0: only a flush writes back)", False)
    writer("s")
    check_legs(data, off, "after fsync returned")
    d, fsyncs = dirty()
    if d != 0:
        sys.exit(f"writeback: {d} dirty blocks in the cache after fsync")
    if fsyncs <= fsyncs0:
        sys.exit("writeback: the daemon counted no fsync")
    # close() (FUSE flush) starts writing back what is dirty and is
    # answered at once: on an event loop without the slow pool.
    data3 = os.urandom(3 * 4096)
    pwrite(data3, 13 << 19)  # in [5M, 7M): copied into the reference after
    j0 = status()
    if j0["cache"]["dirty"] == 0:
        sys.exit("writeback: nothing dirty after a 12 KiB write")
    writer("c")
    for _ in range(100):
        j1 = status()
        if j1["cache"]["dirty"] == 0:
            break
        time.sleep(0.1)
    else:
        sys.exit(f"writeback: {j1['cache']['dirty']} blocks still dirty 10 s after close()")
    check_legs(data3, 13 << 19, "after close() (written back, not flushed)")
    if j1["io"]["flushes"] <= j0["io"]["flushes"] or j1["io"]["fsyncs"] != j0["io"]["fsyncs"]:
        sys.exit(f"writeback: close() counted {j1['io']['flushes'] - j0['io']['flushes']} "
                 f"flushes, {j1['io']['fsyncs'] - j0['io']['fsyncs']} fsyncs (want >= 1, 0)")
    if j1["io"]["slow_jobs"] != j0["io"]["slow_jobs"]:
        sys.exit("writeback: close() gave its flush to the slow pool")
if mode == "writethrough" and fsyncs != fsyncs0:
    sys.exit("writethrough: a flush reached the daemon meanwhile: the check proves nothing")
w.stdin.close()
if w.wait() != 0:
    sys.exit(f"{mode}: the writer failed")
print(f"{mode}: durability checks passed")
PY
}

# eof_checks: reads, writes and fallocate at and across the end.
eof_checks() {
	local n

	n=$(dd if="$img" bs=4096 iflag=skip_bytes skip=$((SIZE - 1234)) count=10 status=none | wc -c)
	assert_eq "$n" 1234 "bytes read from 1234 before the end (bs=4096 count=10)"
	n=$(dd if="$img" bs=777 skip=$((SIZE / 777 - 1)) count=5 status=none | wc -c)
	assert_eq "$n" $((SIZE - (SIZE / 777 - 1) * 777)) "bytes read by bs=777 across the end"
	n=$(dd if="$img" bs=4096 iflag=skip_bytes skip="$SIZE" count=1 status=none | wc -c)
	assert_eq "$n" 0 "bytes read at the end"
	n=$(dd if="$img" bs=4096 iflag=skip_bytes skip=$((SIZE + 777)) count=1 status=none | wc -c)
	assert_eq "$n" 0 "bytes read past the end"

	assert_fails 'No space left on device' \
		dd if=/dev/zero of="$img" bs=4096 seek=$((SIZE / 4096)) count=1 conv=notrunc
	assert_fails 'No space left on device' \
		dd if=/dev/zero of="$img" bs=777 oflag=seek_bytes seek=$((SIZE + 4097)) count=1 conv=notrunc
	assert_fails 'No space left on device' \
		dd if="$T/src" of="$img" bs=8192 oflag=seek_bytes seek=$((SIZE - 1000)) count=1 conv=notrunc
	grep -q '^1000 bytes' "$T/last.err" ||
		fail "dd across the end: expected 1000 bytes copied before ENOSPC: $(cat "$T/last.err")"
	dd if="$T/src" of="$T/ref" bs=1000 oflag=seek_bytes seek=$((SIZE - 1000)) count=1 \
		conv=notrunc status=none
	python3 - "$img" "$SIZE" <<'PY' || fail "writes at and across the end (see above)"
import errno, os, sys
img, size = sys.argv[1], int(sys.argv[2])
fd = os.open(img, os.O_RDWR)
data = os.urandom(8192)
n = os.pwrite(fd, data, size - 3000)
if n != 3000:
    sys.exit(f"a write of 8192 bytes 3000 before the end returned {n}, expected 3000 (short)")
if os.pread(fd, 8192, size - 3000) != data[:3000]:
    sys.exit("the bytes of the short write do not read back")
for off in (size, size + 1, size + (1 << 20)):
    try:
        n = os.pwrite(fd, data, off)
        sys.exit(f"a write at {off} (end {size}) returned {n}, expected ENOSPC")
    except OSError as e:
        if e.errno != errno.ENOSPC:
            sys.exit(f"a write at {off}: {e}, expected ENOSPC")
os.close(fd)
if os.stat(img).st_size != size:
    sys.exit(f"image size is {os.stat(img).st_size}, expected {size}")
PY
	dd if="$img" of="$T/tail" bs=3000 iflag=skip_bytes skip=$((SIZE - 3000)) count=1 status=none
	dd if="$T/tail" of="$T/ref" bs=3000 oflag=seek_bytes seek=$((SIZE - 3000)) conv=notrunc status=none
	assert_fails 'Operation not permitted' truncate -s $((SIZE - 4096)) "$img"
	assert_fails 'Operation not permitted' truncate -s $((SIZE + 4096)) "$img"
	assert_fails 'No space left on device' fallocate -o $((SIZE - 4096)) -l 8192 "$img"
	# O_TRUNC is ignored, as on a block device: dd without conv=notrunc
	# writes its block and leaves the rest (the reference comparison at
	# the end sees all of it).
	head -c 4096 /dev/urandom >"$T/otrunc"
	dd if="$T/otrunc" of="$img" bs=4096 seek=5 status=none
	dd if="$T/otrunc" of="$T/ref" bs=4096 seek=5 conv=notrunc status=none
	assert_eq "$(stat -c %s "$img")" "$SIZE" "image size after writes, truncate, fallocate at the end, O_TRUNC"
}

# zero_checks: punching a hole and zeroing a range (unaligned ends: partial
# blocks), in the image and in the reference.
zero_checks() {
	local off len op
	for op in -p -z; do
		if [[ $op == -p ]]; then off=$(((9 << 20) + 1234)) len=$(((1 << 20) + 5000))
		else off=$(((20 << 20) + 4000)) len=$((300001)); fi
		fallocate "$op" -o "$off" -l "$len" "$img" || fail "fallocate $op -o $off -l $len failed"
		dd if=/dev/zero of="$T/ref" bs=64k oflag=seek_bytes iflag=count_bytes seek="$off" \
			count="$len" conv=notrunc status=none
		readcmp bs=4096 iflag=skip_bytes,count_bytes skip=$((off - 8192)) count=$((len + 16384))
	done
	# A hole that runs past the end stops at the end (KEEP_SIZE).
	fallocate -p -o $((SIZE - 5000)) -l 1M "$img" || fail "fallocate -p across the end failed"
	dd if=/dev/zero of="$T/ref" bs=5000 oflag=seek_bytes seek=$((SIZE - 5000)) count=1 \
		conv=notrunc status=none
	readcmp bs=4096 iflag=skip_bytes skip=$((SIZE - 9000))
}

for mode in writeback writethrough; do
	log "[$mode] mount"
	rm -rf "${T:?}/leg0" "${T:?}/leg1" "${T:?}/mnt"
	mkdir "$T/mnt"
	fm_create --size "$SIZE" "$T/leg0" "$T/leg1"
	opts=cache_mode=$mode
	[[ $mode == writeback ]] && opts+=,writeback_age=0
	fm_mount -o "$opts" "$T/leg0" "$T/leg1" "$T/mnt"
	img=$T/mnt/image
	fm status --json "$T/mnt" >"$T/status.json"
	assert_eq "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cache_mode"])' \
		"$T/status.json")" "$mode" "cache_mode in status --json"
	truncate -s 0 "$T/ref"
	truncate -s "$SIZE" "$T/ref"

	log "[$mode] durability of a write / of fsync"
	durability "$mode"
	dd if="$img" of="$T/ref" bs=1M iflag=skip_bytes,count_bytes skip=$((5 << 20)) \
		count=$((2 << 20)) oflag=seek_bytes seek=$((5 << 20)) conv=notrunc status=none

	log "[$mode] unaligned dd writes and reads against a reference file"
	ddboth bs=777 seek=13 count=100
	ddboth bs=777 skip=5 seek=$(((9 << 20) / 777)) count=3000
	ddboth bs=4097 skip=3 seek=1001 count=333
	ddboth bs=777 skip=1 seek=14 count=7            # overlaps the first
	ddboth bs=1 skip=77 seek=$((12345678)) count=1
	ddboth bs=1M iflag=skip_bytes skip=4097 oflag=seek_bytes seek=$(((20 << 20) + 1)) count=2
	ddboth bs=65536 oflag=seek_bytes seek=$(((30 << 20) - 3)) count=8
	ddboth bs=3 oflag=seek_bytes seek=$((SIZE - 777)) count=100
	dd if="$img" bs=1M status=none | cmp - "$T/ref" ||
		fail "[$mode] the image differs from the reference after unaligned writes"
	readcmp bs=777 skip=17 count=9
	readcmp bs=777 skip=$(((9 << 20) / 777 + 5)) count=2000
	readcmp bs=4097 skip=1000 count=400
	readcmp bs=1M iflag=skip_bytes skip=$(((20 << 20) + 4095)) count=3
	readcmp bs=1 skip=12345677 count=3

	log "[$mode] the end of the image"
	eof_checks
	log "[$mode] fallocate punch hole / zero range"
	zero_checks

	# Overlapping concurrent writers on a scratch range (the reference
	# gets what the image holds there; the legs must agree with both).
	log "[$mode] overlapping concurrent writes"
	run_fio "overlap-$mode" --filename="$img" --direct=1 --ioengine=io_uring --iodepth=32 \
		--rw=randwrite --bsrange=512-256k --blockalign=512 --offset=40M --size=8M \
		--numjobs=4 --time_based --runtime=2 --randrepeat=0
	dd if="$img" of="$T/ref" bs=1M skip=40 seek=40 count=8 conv=notrunc status=none

	log "[$mode] umount, mount, compare"
	fm_umount "$T/mnt"
	sum=$(assert_legs_equal "$T/leg0" "$T/leg1")
	assert_eq "$sum" "$(leg_sum "$T/ref")" "[$mode] legs' data areas vs the reference"
	fm_mount -o "cache_mode=$mode" "$T/leg0" "$T/leg1" "$T/mnt"
	dd if="$img" bs=1M status=none | cmp - "$T/ref" ||
		fail "[$mode] the image differs from the reference after umount/mount"
	fm_umount "$T/mnt"
done

log "cache_size=1M: concurrent unaligned 1 MiB reads through the cache"
rm -rf "${T:?}/leg0" "${T:?}/leg1"
fm_create --size "$SIZE" "$T/leg0" "$T/leg1"
fm_mount -o cache_size=1M,threads=16 "$T/leg0" "$T/leg1" "$T/mnt"
dd if="$T/src" of="$img" bs=1M conv=notrunc,fsync status=none || fail "filling the image failed"
# In the background: a reader stuck in a hung FUSE read cannot be killed,
# and bash would run no trap (not even the watchdog's) until it returned.
python3 - "$img" "$T/src" <<'PY' &
import os, random, sys, threading
img, src = sys.argv[1:]
ref = open(src, "rb").read()
size, MiB = len(ref), 1 << 20
errors = []

def reader(seed):
    rnd, fd = random.Random(seed), os.open(img, os.O_RDONLY)
    for _ in range(40):
        off = rnd.randrange(1, size - MiB)      # never aligned to a block
        got = os.pread(fd, MiB, off)
        if got != ref[off:off + MiB]:
            errors.append(f"reader {seed}: {MiB} bytes at {off} differ")
            break
    os.close(fd)

def writer(seed, stop):
    # Rewrites blocks with their own bytes: keeps blocks of every range
    # cached (so the big reads go through the cache), changes nothing.
    rnd, fd = random.Random(seed), os.open(img, os.O_WRONLY)
    while not stop.is_set():
        off = rnd.randrange(size // 4096) * 4096
        os.pwrite(fd, ref[off:off + 4096], off)
    os.close(fd)

stop = threading.Event()
writers = [threading.Thread(target=writer, args=(100 + i, stop)) for i in range(2)]
readers = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
for t in writers + readers:
    t.start()
for t in readers:
    t.join()
stop.set()
for t in writers:
    t.join()
if errors:
    sys.exit("\n".join(errors))
PY
readers=$!
wait_pid_gone "$readers" 60 ||
	fail "8 readers of 1 MiB through a 1 MiB cache did not finish within 60 s (hung)"
rc=0
wait "$readers" || rc=$?
((rc == 0)) || fail "reads through a 1 MiB cache returned wrong bytes (see above)"
fm_umount "$T/mnt"
assert_legs_equal "$T/leg0" "$T/leg1" >/dev/null

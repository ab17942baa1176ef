#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# A leg in memory whose file is truncated behind the daemon.  Reads on
# legs in memory are answered from the leg's mapping (front.c,
# read_mapped()): the kernel copies the reply from the leg's pages, and a
# page gone fails that copy with EFAULT, after which the kernel ends the
# request with EIO itself.  That read cannot be redone; the ones after it
# must not fail too: the first fault makes the leg's mapping untrusted
# (dmio_dev_map_forget()), so reads of it go through the engine, whose
# short read is a read error the mirror repairs from the other leg.
# Checked one request at a time (the blocking clone's writev() replies) and
# 32 at a time (replies on the loops' rings): at most the requests in
# flight when the first copy faulted fail, every other read returns the
# bytes written, and the daemon stays up.  Run with FM_TEST_TMPDIR on
# tmpfs.
source "$(dirname "$0")/lib.sh"

SIZE=$((64 << 20))
case $(stat -f -c %T "$T") in
tmpfs | ramfs) ;;
*)
	echo "leg_shrunk: SKIP: legs not in memory ($(stat -f -c %T "$T"))"
	exit 77
	;;
esac

# shrunk_read FIRST_MIB MIB THREADS: read [FIRST_MIB, + MIB) MiB of the
# image in 4 KiB O_DIRECT reads in random order (no leg keeps a
# sequential stream: both serve them) by THREADS threads, each its own
# share one read at a time; each compared with $T/src.  Prints "FAILED
# WRONG": the reads that failed (EIO), those that returned other bytes.
shrunk_read() {
	python3 - "$img" "$T/src" "$1" "$2" "$3" <<'PY'
import errno, mmap, os, random, sys, threading
img, src, first, mib, nthreads = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
want = open(src, "rb").read()
blocks = list(range(first * 256, (first + mib) * 256))
random.Random(first).shuffle(blocks)    # no leg keeps a sequential stream
failed = wrong = 0
lock = threading.Lock()
def reader(share):
    global failed, wrong
    fd = os.open(img, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, 4096)
    f = w = 0
    for b in share:
        try:
            os.preadv(fd, [buf], b * 4096)
        except OSError as e:
            if e.errno != errno.EIO:
                raise
            f += 1
            continue
        if buf[:] != want[b * 4096:(b + 1) * 4096]:
            w += 1
    os.close(fd)
    with lock:
        failed += f
        wrong += w
ts = [threading.Thread(target=reader, args=(blocks[i::nthreads],)) for i in range(nthreads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print(failed, wrong)
PY
}

# shrunk_run NAME THREADS: an array of two legs in memory, NAME0 and
# NAME1, mounted; 32 MiB written and read back from the legs' mappings;
# NAME0 truncated to its first 8 MiB of data; [8, 32) MiB read THREADS at
# a time.
shrunk_run() {
	local name=$1 threads=$2 doff mr0 e0 mr f w

	log "$name: reads $threads at a time"
	mkdir "$T/$name"
	fm_create --checksums=no --size "$SIZE" "$T/${name}0" "$T/${name}1"
	fm_mount "$T/${name}0" "$T/${name}1" "$T/$name"
	img=$T/$name/image
	if [[ $(fm_status_get "$T/$name" .transport.name) != dev ]]; then
		echo "leg_shrunk: SKIP: mapped replies are /dev/fuse's"
		exit 77
	fi
	doff=$(data_offset_of "$T/${name}0")
	dd if="$T/src" of="$img" bs=1M oflag=direct conv=notrunc status=none ||
		fail "writing 32 MiB to the image"
	mr0=$(fm_status_get "$T/$name" .io.mapped_replies)
	read -r f w < <(shrunk_read 0 32 "$threads") || fail "reading the image"
	assert_eq "$f $w" "0 0" "reads that failed, reads that returned other bytes, legs whole"
	mr=$(($(fm_status_get "$T/$name" .io.mapped_replies) - mr0))
	((mr >= 4096)) || fail "only $mr of 8192 reads answered from the legs' mappings"

	truncate -s $((doff + (8 << 20))) "$T/${name}0"
	e0=$(fm_io_errors "$T/$name")
	read -r f w < <(shrunk_read 8 24 "$threads") || fail "reading the image after ${name}0 shrank"
	log "$name: failed $f, wrong $w of 6144 reads"
	assert_eq "$w" 0 "reads that returned other bytes than written"
	((f <= threads)) ||
		fail "$f of 6144 reads $threads at a time failed (EIO) after ${name}0 shrank: at most $threads may"
	((f >= 1)) || fail "no read failed: none was answered from ${name}0's mapping after it shrank?"
	assert_eq "$(($(fm_io_errors "$T/$name") - e0))" "$f" "io.errors counted for the failed reads"
	assert_eq "$(fm_leg_state "$T/$name" "$T/${name}0")" faulty "state of ${name}0, shrunk"
	assert_eq "$(fm_array_degraded "$T/$name")" true "array degraded"
	pid_alive "$FM_PID" || fail "the daemon died"
	read -r f w < <(shrunk_read 0 32 "$threads") || fail "reading the image at the end"
	assert_eq "$f $w" "0 0" "reads that failed, reads that returned other bytes, at the end"
	fm_umount "$T/$name"
}

head -c $((32 << 20)) /dev/urandom >"$T/src"
shrunk_run qd1 1
shrunk_run qd32 32

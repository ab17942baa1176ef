#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Every leg failing.  Data is written and the array remounted (an empty
# cache: reads must reach the legs); then reads, writes and flushes fail on
# both legs (`fusemirror inject --read --write --flush`):
#   - a read of data not in the cache fails with EIO and returns no bytes
#     (not garbage, not zeroes);
#   - a write (dd, O_DIRECT, fsync) fails with EIO: dd exits non-zero;
#   - the daemon still answers `status`; the array is failed (man page,
#     RESILIENCE: "with no in-sync leg left the array is failed and every
#     I/O fails with EIO; umount still works"), and the errors it returned
#     are counted (io.errors > 0);
#   - `fusemirror umount` still unmounts and stops the daemon.  Its exit
#     status: man/fusemirror.8 (EXIT STATUS) gives 1 for "an I/O or runtime
#     failure: a write failed on a leg ...", and umount writes back the
#     cache and marks the superblocks clean, which every leg now refuses;
#     our assumption: 1 when any of that failed, 0 if the daemon had
#     nothing left to write.  We accept 0 or 1 and require the mount and the
#     daemon to be gone (anything else, e.g. 5 "no daemon" or a hang,
#     fails);
#   - with the faults gone (a new mount), the data written before the
#     faults is intact.
source "$(dirname "$0")/lib.sh"
cd "$T" || fail "cannot cd to $T"

SIZE=$((32 << 20))
mkdir "$T/mnt"
fm_create --size "$SIZE" --region-size 1M "$T/leg0" "$T/leg1"
img=$T/mnt/image
head -c $((8 << 20)) /dev/urandom >"$T/data"

fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
dd if="$T/data" of="$img" bs=1M oflag=direct conv=notrunc,fsync status=none
fm_umount "$T/mnt"

fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
pid=$FM_PID
for l in leg0 leg1; do
	fm_ok inject "$T/mnt" "$T/$l" --read --write --flush
done

log "a read of uncached data: EIO, no bytes"
rc=0
dd if="$img" of="$T/read.out" bs=1M count=1 skip=4 iflag=direct status=none 2>"$T/read.err" || rc=$?
((rc != 0)) || fail "a read with every leg failing succeeded"
grep -q 'Input/output error' "$T/read.err" || fail "the read failed, but not with EIO: $(cat "$T/read.err")"
assert_eq "$(stat -c %s "$T/read.out")" 0 "bytes returned by the failed read"

log "a write: EIO"
rc=0
head -c $((1 << 20)) /dev/urandom |
	dd of="$img" bs=1M seek=16 oflag=direct conv=notrunc,fsync iflag=fullblock status=none \
		2>"$T/write.err" || rc=$?
((rc != 0)) || fail "a write with every leg failing succeeded"
grep -q 'Input/output error' "$T/write.err" || fail "the write failed, but not with EIO: $(cat "$T/write.err")"

log "the daemon still answers"
state=$(fm_array_state "$T/mnt")
assert_eq "$state" failed "array state with every leg failing"
v=$(fm_array_failed "$T/mnt");                   assert_eq "$v" true "array.failed"
errs=$(fm_io_errors "$T/mnt")
((errs > 0)) || fail "io.errors is $errs after failed reads and writes"
log "array $state, $errs errors returned"

log "umount with every leg failing"
rc=0
timeout -k 5 120 "$FM" umount "$T/mnt" >"$T/umount.out" 2>"$T/umount.err" || rc=$?
((rc == 0 || rc == 1)) || fail "fusemirror umount exited $rc: $(cat "$T/umount.err")"
log "umount exited $rc: $(cat "$T/umount.err")"
assert_not_mounted "$(realpath "$T/mnt")"
wait_pid_gone "$pid" 30 || fail "daemon $pid still runs 30 s after umount"

log "without the faults, the data written before them is intact"
fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
dd if="$img" bs=1M count=8 iflag=direct status=none | cmp - "$T/data" ||
	fail "the data written before the faults is damaged"
fm_umount "$T/mnt"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Read errors on one leg (injected: `fusemirror inject --read`):
#   (a) the defaults (max_read_errors 20, read_error_rate 5%): 1% of leg
#       0's reads fail (transient: each rewrite verifies) while fio writes and
#       verifies (crc32c) 64 MiB; reads go to leg 0 first
#       (read_policy=first) and the cache is small (cache_size=4M), so the
#       verification reads reach the legs.  fio sees no error and no
#       verification failure; the daemon returned no error (io.errors 0);
#       leg 0 reports corrected > 0 read errors (retried on leg 1, the bad
#       copy rewritten) and stays in_sync however many there are (their
#       rate, not their count, would fail it); the array is not degraded.
#   (b) with the fault cleared, `scrub --wait` finds 0 mismatches; a
#       control: 4 KiB changed behind the daemon's back on leg 1 makes a
#       scrub find mismatches, `scrub --repair` rewrites them, and a scrub
#       after it finds none.  After umount the legs are identical and fio's
#       data still verifies through a new mount.
#   (c) max_read_errors=5 and 20% of leg 0's reads failing (above
#       read_error_rate, although every rewrite verifies): leg 0 becomes
#       faulty, the array degraded, and I/O goes on (fio write + verify
#       before and after the failure, no error to the client).
source "$(dirname "$0")/lib.sh"
cd "$T" || fail "cannot cd to $T"

SIZE=$((128 << 20))
mkdir "$T/mnt"
fm_create --size "$SIZE" --region-size 1M "$T/leg0" "$T/leg1"
img=$T/mnt/image
common=(--filename="$img" --direct=1 --ioengine=io_uring --verify=crc32c
	--verify_fatal=1 --do_verify=1 --rw=randwrite --bsrange=4k-64k --iodepth=16)

log "(a) 1% of leg 0's reads fail; max_read_errors and read_error_rate at their defaults"
fm_mount -o read_policy=first,cache_size=4M \
	"$T/leg0" "$T/leg1" "$T/mnt"
fm_ok inject "$T/mnt" "$T/leg0" --read --probability 0.01 --seed 1
run_fio rerr "${common[@]}" --offset=0 --size=64M

v=$(fm_io_errors "$T/mnt");                      assert_eq "$v" 0 "errors returned to the client"
v=$(fm_leg_get "$T/mnt" "$T/leg0" state);        assert_eq "$v" in_sync "leg 0 state after corrected read errors"
v=$(fm_leg_get "$T/mnt" "$T/leg1" state);        assert_eq "$v" in_sync "leg 1 state"
v=$(fm_array_degraded "$T/mnt");                 assert_eq "$v" false "array degraded"
corrected=$(fm_leg_get "$T/mnt" "$T/leg0" corrected)
rerrs=$(fm_leg_get "$T/mnt" "$T/leg0" read_errors)
log "leg 0: $rerrs read errors, $corrected corrected"
((corrected > 0)) || fail "leg 0 corrected no read error (read_errors $rerrs): the fault did not bite"

log "(b) fault cleared; scrub finds no mismatch"
fm_ok inject "$T/mnt" "$T/leg0" --clear
fm_ok scrub --wait "$T/mnt"
v=$(fm_sync_get "$T/mnt" last_action);           assert_eq "$v" check "sync.last_action after scrub"
v=$(fm_sync_get "$T/mnt" mismatches);            assert_eq "$v" 0 "mismatches after the corrected read errors"

log "control: 4 KiB changed on leg 1 behind the daemon's back"
off=$(($(data_offset_of "$T/leg1") + (32 << 20) + 8192))
head -c 4096 /dev/urandom | dd of="$T/leg1" bs=4096 seek=$((off / 4096)) oflag=direct \
	conv=notrunc status=none
fm_ok scrub --wait "$T/mnt"
m=$(fm_sync_get "$T/mnt" mismatches)
((m > 0)) || fail "scrub found no mismatch after leg 1 was changed (mismatches $m): the scrub checks nothing"
fm_ok scrub --repair --wait "$T/mnt"
v=$(fm_sync_get "$T/mnt" last_action);           assert_eq "$v" repair "sync.last_action after scrub --repair"
fm_ok scrub --wait "$T/mnt"
v=$(fm_sync_get "$T/mnt" mismatches);            assert_eq "$v" 0 "mismatches after scrub --repair"
fm_umount "$T/mnt"
assert_legs_equal "$T/leg0" "$T/leg1" >/dev/null
fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
run_fio rerr "${common[@]}" --offset=0 --size=64M --verify_only
fm_umount "$T/mnt"

log "(c) 20% of leg 0's reads fail; max_read_errors=5"
fm_mount -o max_read_errors=5,read_policy=first,cache_size=4M "$T/leg0" "$T/leg1" "$T/mnt"
fm_ok inject "$T/mnt" "$T/leg0" --read --probability 0.2 --seed 2
run_fio rerr2 "${common[@]}" --offset=64M --size=32M
fm_wait_leg_state "$T/mnt" "$T/leg0" faulty 10
v=$(fm_leg_get "$T/mnt" "$T/leg1" state);        assert_eq "$v" in_sync "leg 1 state"
v=$(fm_array_degraded "$T/mnt");                 assert_eq "$v" true "array degraded after leg 0 failed"
v=$(fm_array_state "$T/mnt");                    assert_eq "$v" degraded "array state"
log "I/O goes on without leg 0"
run_fio rerr3 "${common[@]}" --offset=96M --size=16M
v=$(fm_io_errors "$T/mnt");                      assert_eq "$v" 0 "errors returned to the client"
fm_umount "$T/mnt"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Write errors on one leg (injected: `fusemirror inject --write`, the whole
# leg, superblock and bitmap included):
#   - baseline data in regions 0..7, then a clean umount (bitmap clear);
#   - remount, fail every write to leg 1, fio writes and verifies (crc32c)
#     32 MiB in regions 16..47: fio sees no error, the daemon returned none
#     (io.errors 0); status: leg 1 faulty with write errors, leg 0 in_sync,
#     the array degraded; leg 0's event counter (on disk, read while
#     mounted) went up when leg 1 failed;
#   - `fusemirror umount` succeeds and leaves leg 0 clean; examine (offline):
#     leg 0 records leg 1 as faulty in its leg table and has a higher event
#     counter than leg 1 (stale), and its bitmap holds exactly the regions
#     written while degraded (16..47: bits are never cleared while degraded);
#   - mount with both legs again: leg 1 is stale and is re-added with bitmap
#     recovery: sync.resynced_regions is exactly those 32 regions (not the
#     128 of a full rebuild), leg 1 ends in_sync, the array not degraded;
#   - after umount the legs are identical, both clean with the same event
#     counter, and fio's data (baseline and degraded) verifies.
source "$(dirname "$0")/lib.sh"
cd "$T" || fail "cannot cd to $T"

SIZE=$((128 << 20))
mkdir "$T/mnt"
fm_create --size "$SIZE" --region-size 1M "$T/leg0" "$T/leg1"
img=$T/mnt/image
common=(--filename="$img" --direct=1 --ioengine=io_uring --verify=crc32c
	--verify_fatal=1 --do_verify=1 --rw=randwrite --bsrange=4k-64k --iodepth=16)

log "baseline: 8 MiB in regions 0..7, clean umount"
fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
run_fio base "${common[@]}" --offset=0 --size=8M
fm_umount "$T/mnt"

log "every write to leg 1 fails; fio writes regions 16..47"
fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
ev_before=$(sb_events "$T/leg0")
fm_ok inject "$T/mnt" "$T/leg1" --write
run_fio werr "${common[@]}" --offset=16M --size=32M

v=$(fm_io_errors "$T/mnt");                      assert_eq "$v" 0 "errors returned to the client"
v=$(fm_leg_get "$T/mnt" "$T/leg1" state);        assert_eq "$v" faulty "leg 1 state"
v=$(fm_leg_get "$T/mnt" "$T/leg0" state);        assert_eq "$v" in_sync "leg 0 state"
v=$(fm_array_degraded "$T/mnt");                 assert_eq "$v" true "array degraded"
v=$(fm_array_state "$T/mnt");                    assert_eq "$v" degraded "array state"
werrs=$(fm_leg_get "$T/mnt" "$T/leg1" write_errors)
((werrs > 0)) || fail "leg 1 is faulty but counts no write error"
ev_after=$(sb_events "$T/leg0")
((ev_after > ev_before)) ||
	fail "leg 0's event counter did not go up when leg 1 failed ($ev_before -> $ev_after)"
log "leg 1 faulty after $werrs write errors; leg 0 events $ev_before -> $ev_after"

# Assumption: stopping a degraded array is a clean stop (exit 0) that marks
# the remaining in-sync legs clean (md: a clean, degraded array).
fm_umount "$T/mnt"
sb_clean "$T/leg0" || fail "leg 0 is not marked clean after the umount of the degraded array"

log "offline: leg 0's superblock and bitmap"
e0=$(fm_examine_get "$T/leg0" .events)
e1=$(fm_examine_get "$T/leg1" .events)
((e0 > e1)) || fail "leg 0 (events $e0) is not newer than the failed leg 1 (events $e1)"
v=$(fm_examine_get "$T/leg0" .clean);            assert_eq "$v" true "examine: leg 0 clean"
idx1=$(fm_examine_get "$T/leg1" .leg_index)
v=$(fm_examine_table_state "$T/leg0" "$idx1");   assert_eq "$v" faulty "leg 0's table: state of leg 1"
fm_bitmap_regions "$T/leg0" >"$T/bitmap.regions"
seq 16 47 >"$T/expected.regions"
cmp -s "$T/bitmap.regions" "$T/expected.regions" ||
	fail "leg 0's bitmap holds regions [$(tr '\n' ' ' <"$T/bitmap.regions")], expected 16..47 (written while degraded)"

log "mount with both legs: the stale leg 1 is re-added with bitmap recovery"
fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
fm_wait_sync_idle "$T/mnt" 120
fm_wait_leg_state "$T/mnt" "$T/leg1" in_sync 30
v=$(fm_sync_get "$T/mnt" resynced_regions);      assert_eq "$v" 32 "regions recovered (16..47; a full rebuild would be 128)"
v=$(fm_sync_get "$T/mnt" last_action);           assert_eq "$v" recover "sync.last_action"
v=$(fm_array_degraded "$T/mnt");                 assert_eq "$v" false "array degraded after recovery"
fm_umount "$T/mnt"

assert_legs_equal "$T/leg0" "$T/leg1" >/dev/null
for l in leg0 leg1; do sb_clean "$T/$l" || fail "$l not clean after the final umount"; done
e0=$(fm_examine_get "$T/leg0" .events)
e1=$(fm_examine_get "$T/leg1" .events)
assert_eq "$e1" "$e0" "event counters of the legs after recovery"

log "the data verifies: baseline and what was written while degraded"
fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
run_fio base "${common[@]}" --offset=0 --size=8M --verify_only
run_fio werr "${common[@]}" --offset=16M --size=32M --verify_only
fm_umount "$T/mnt"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# fail / remove / add of a leg, and bitmap-based recovery (md's --re-add):
#   - mounted with 1 MiB regions and bitmap_delay=2000: a write sets bits
#     (bitmap.set > 0 just after it) which are cleared once the array has
#     been idle for bitmap_delay (bitmap.set back to 0);
#   - `fusemirror fail` leg 1: faulty, the array degraded; then writes in 6
#     known regions (3 MiB at 10 MiB: 10..12; 1 MiB at 50.5 MiB: 50, 51;
#     4 KiB at 100 MiB: 100); after more than bitmap_delay the bits are
#     still set (never cleared while degraded): bitmap.set == 6;
#   - `fusemirror remove` leg 1: gone from the status;
#   - `fusemirror add` leg 1: re-added with bitmap recovery, which copies
#     exactly those 6 regions (sync.resynced_regions grows by 6; a full
#     rebuild would copy 128); leg 1 ends in_sync, the array not degraded,
#     and once idle the bitmap is clear again;
#   - after umount the legs are identical and leg 1 holds what was written
#     while it was out.
source "$(dirname "$0")/lib.sh"
cd "$T" || fail "cannot cd to $T"

SIZE=$((128 << 20))
mkdir "$T/mnt"
fm_create --size "$SIZE" --region-size 1M "$T/leg0" "$T/leg1"
fm_mount -o bitmap_delay=2000 "$T/leg0" "$T/leg1" "$T/mnt"
img=$T/mnt/image

# put FILE OFFSET: write FILE into the image at OFFSET (O_DIRECT, fsync).
put() {
	dd if="$1" of="$img" bs=4096 seek=$(($2 / 4096)) oflag=direct conv=notrunc,fsync \
		status=none || fail "writing $1 at $2 failed"
}

log "a write sets bits; idle, they are cleared"
head -c $((4 << 20)) /dev/urandom >"$T/base"
put "$T/base" 0
set=$(fm_bitmap_get "$T/mnt" set)
((set > 0)) || fail "no bitmap bit set just after a write to 4 regions (bitmap.set $set)"
fm_wait_status "$T/mnt" .bitmap.set 0 30

log "fail leg 1, write 6 regions"
fm_ok fail "$T/mnt" "$T/leg1"
v=$(fm_leg_get "$T/mnt" "$T/leg1" state);        assert_eq "$v" faulty "leg 1 state after fail"
v=$(fm_array_degraded "$T/mnt");                 assert_eq "$v" true "array degraded"
head -c $((3 << 20)) /dev/urandom >"$T/a"
head -c $((1 << 20)) /dev/urandom >"$T/b"
head -c 4096 /dev/urandom >"$T/c"
put "$T/a" $((10 << 20))                        # regions 10, 11, 12
put "$T/b" $(((50 << 20) + (512 << 10)))        # regions 50, 51
put "$T/c" $((100 << 20))                       # region 100
sleep 3                                         # > bitmap_delay
v=$(fm_bitmap_get "$T/mnt" set);                 assert_eq "$v" 6 "bits set while degraded"

log "remove leg 1"
fm_ok remove "$T/mnt" "$T/leg1"
v=$(fm_leg_state "$T/mnt" "$T/leg1");            assert_eq "$v" absent "leg 1 in the status after remove"

log "add leg 1 back: bitmap recovery"
before=$(fm_sync_get "$T/mnt" resynced_regions)
fm_ok add "$T/mnt" "$T/leg1"
fm_wait_leg_state "$T/mnt" "$T/leg1" in_sync 60
fm_wait_sync_idle "$T/mnt" 60
after=$(fm_sync_get "$T/mnt" resynced_regions)
assert_eq "$((after - before))" 6 "regions recovered by the re-add (a full rebuild would be 128)"
v=$(fm_sync_get "$T/mnt" last_action);           assert_eq "$v" recover "sync.last_action"
v=$(fm_array_degraded "$T/mnt");                 assert_eq "$v" false "array degraded after the re-add"
fm_wait_status "$T/mnt" .bitmap.set 0 30
fm_umount "$T/mnt"

assert_legs_equal "$T/leg0" "$T/leg1" >/dev/null
leg_read "$T/leg1" $((10 << 20)) $((3 << 20)) | cmp - "$T/a" || fail "leg 1 lacks the 3 MiB at 10 MiB"
leg_read "$T/leg1" $(((50 << 20) + (512 << 10))) $((1 << 20)) | cmp - "$T/b" ||
	fail "leg 1 lacks the 1 MiB at 50.5 MiB"
leg_read "$T/leg1" $((100 << 20)) 4096 | cmp - "$T/c" || fail "leg 1 lacks the 4 KiB at 100 MiB"
leg_read "$T/leg1" 0 $((4 << 20)) | cmp - "$T/base" || fail "leg 1 lost the data written before it failed"

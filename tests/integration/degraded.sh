#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Degraded start, a leg that went back in time, split brain (issue 13
# items 1, 3, 4), through the real daemon and CLI, on a 2-leg array of
# 64 MiB with 1 MiB regions:
#   - leg 1 absent: `mount` refuses (exit 3, names --degraded), nothing
#     written; `mount --degraded` starts, status shows leg 1 `missing` with
#     its UUID (text and JSON), examine too; 3 regions written stay in the
#     bitmap; later `add` of leg 1 copies exactly those 3 regions (a full
#     rebuild would be 64), and the legs end byte-identical;
#   - leg 1 restored from an old copy: `mount` with both legs starts (no
#     "was not given"), status says leg 1 is stale and went back in time
#     (its events, the array's), it is rebuilt wholly (64 regions; the
#     first mount's rebuild, at 4k/s, is interrupted by umount and the
#     next mount starts it over), legs identical;
#   - each leg started alone with --degraded and written: `mount` of both
#     refuses (exit 3, "split brain", both paths, --prefer), nothing
#     written; `mount --prefer leg1` keeps leg 1's data on both legs.
source "$(dirname "$0")/lib.sh"
cd "$T" || fail "cannot cd to $T"

SIZE=$((64 << 20))
mkdir "$T/mnt"
L0=$T/leg0
L1=$T/leg1
fm_create --size "$SIZE" --region-size 1M "$L0" "$L1"
img=$T/mnt/image

# put FILE OFFSET: write FILE into the image at OFFSET (O_DIRECT, fsync).
put() {
	dd if="$1" of="$img" bs=4096 seek=$(($2 / 4096)) oflag=direct conv=notrunc,fsync \
		status=none || fail "writing $1 at $2 failed"
}

# The status --json leg object of slot SLOT, KEY of it.
slot_get() {
	fm_status_json "$T/mnt" >/dev/null
	python3 - "$1" "$2" "$T/status.json" <<'PY'
import json, sys
slot, key, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
for l in json.load(open(path))["legs"]:
    if l["slot"] == slot:
        v = l[key]
        print(("true" if v else "false") if isinstance(v, bool) else v)
        sys.exit(0)
sys.exit(f"status --json: no slot {slot}")
PY
}

log "a 2-leg array with data"
fm_mount -o bitmap_delay=500 "$L0" "$L1" "$T/mnt"
head -c $((4 << 20)) /dev/urandom >"$T/base"
put "$T/base" 0
fm_umount "$T/mnt"
uuid1=$(fm_examine_get "$L1" .leg_uuid)

log "leg 1 absent: refused without --degraded, nothing written"
s0=$(leg_sum "$L0")
s1=$(leg_sum "$L1")
assert_exit 3 'has 2 legs; leg 1 .* was not given.*--degraded' "$FM" mount "$L0" "$T/mnt"
assert_not_mounted "$T/mnt"
assert_eq "$(leg_sum "$L0")" "$s0" "leg 0 after a refused mount"

log "mount --degraded: leg 1 missing, writes kept in the bitmap"
fm_mount --degraded -o bitmap_delay=500 "$L0" "$T/mnt"
v=$(fm_array_degraded "$T/mnt");  assert_eq "$v" true "array degraded"
v=$(slot_get 1 state);            assert_eq "$v" missing "slot 1 state"
v=$(slot_get 1 uuid);             assert_eq "$v" "$uuid1" "slot 1 uuid"
v=$(slot_get 1 path);             assert_eq "$v" "" "slot 1 path"
fm_ok status "$T/mnt" | grep -Eq "1  missing +\(not present\)" ||
	fail "status text does not show leg 1 missing: $(cat "$T/fm.out")"
grep -q "uuid $uuid1" "$T/fm.out" || fail "status text lacks leg 1's uuid: $(cat "$T/fm.out")"
head -c $((3 << 20)) /dev/urandom >"$T/a"
put "$T/a" $((10 << 20))                        # regions 10, 11, 12
sleep 1.5                                       # > bitmap_delay
v=$(fm_bitmap_get "$T/mnt" set);  assert_eq "$v" 3 "bits set while degraded"
fm_umount "$T/mnt"
assert_eq "$(leg_sum "$L1")" "$s1" "leg 1 (absent) after the degraded mount"
v=$(fm_examine_table_state "$L0" 1);  assert_eq "$v" missing "examine: slot 1 in leg 0's table"
e0=$(sb_events "$L0")
e1=$(sb_events "$L1")
((e0 > e1)) || fail "leg 0's events ($e0) not above the absent leg's ($e1)"

log "leg 0 alone again (no flag needed), add leg 1: 3 regions copied"
fm_mount "$L0" "$T/mnt"
before=$(fm_sync_get "$T/mnt" resynced_regions)
fm_ok add "$T/mnt" "$L1"
fm_wait_leg_state "$T/mnt" "$L1" in_sync 60
fm_wait_sync_idle "$T/mnt" 60
after=$(fm_sync_get "$T/mnt" resynced_regions)
assert_eq "$((after - before))" 3 "regions recovered by the add (a full rebuild is 64)"
v=$(fm_array_degraded "$T/mnt");  assert_eq "$v" false "array degraded after the add"
fm_umount "$T/mnt"
assert_legs_equal "$L0" "$L1" >/dev/null
leg_read "$L1" $((10 << 20)) $((3 << 20)) | cmp - "$T/a" || fail "leg 1 lacks what was written"
leg_read "$L1" 0 $((4 << 20)) | cmp - "$T/base" || fail "leg 1 lost the base data"

log "leg 1 restored from an old copy: rebuilt wholly"
cp --sparse=always "$L1" "$T/leg1.old"
fm_mount "$L0" "$L1" "$T/mnt"
head -c $((1 << 20)) /dev/urandom >"$T/b"
put "$T/b" $((20 << 20))
fm_umount "$T/mnt"
cp --sparse=always "$T/leg1.old" "$L1"
e1=$(sb_events "$L1")
# At 4k/s the rebuild is still running when status is read.
fm_mount -o sync_speed_min=4k,sync_speed_max=4k "$L0" "$L1" "$T/mnt"
v=$(slot_get 1 state);            assert_eq "$v" rebuilding "the old copy's state"
v=$(slot_get 1 note)
[[ $v == "stale (events $e1, the array has "*"went back in time"*wholly ]] ||
	fail "status does not say leg 1 went back in time: '$v'"
fm_ok status "$T/mnt" | grep -q "went back in time" ||
	fail "status text does not say leg 1 went back in time: $(cat "$T/fm.out")"
fm_umount "$T/mnt"
fm_mount "$L0" "$L1" "$T/mnt"
fm_wait_leg_state "$T/mnt" "$L1" in_sync 60
fm_wait_sync_idle "$T/mnt" 60
v=$(fm_sync_get "$T/mnt" resynced_regions);  assert_eq "$v" 64 "regions rebuilt (wholly)"
fm_umount "$T/mnt"
assert_legs_equal "$L0" "$L1" >/dev/null
leg_read "$L1" $((20 << 20)) $((1 << 20)) | cmp - "$T/b" || fail "leg 1 lacks the write it missed"

log "split brain: each leg alone, written"
head -c $((1 << 20)) /dev/urandom >"$T/x"
head -c $((1 << 20)) /dev/urandom >"$T/y"
head -c $((1 << 20)) /dev/urandom >"$T/z"
fm_mount --degraded "$L0" "$T/mnt"
put "$T/x" $((30 << 20))
fm_umount "$T/mnt"
fm_mount --degraded "$L1" "$T/mnt"
put "$T/y" $((30 << 20))
put "$T/z" $((40 << 20))
fm_umount "$T/mnt"
s0=$(leg_sum "$L0")
s1=$(leg_sum "$L1")
assert_exit 3 "split brain: leg $L0 .* and leg $L1 .*--prefer" "$FM" mount "$L0" "$L1" "$T/mnt"
assert_exit 3 "split brain" "$FM" mount --degraded "$L0" "$L1" "$T/mnt"
assert_not_mounted "$T/mnt"
assert_eq "$(leg_sum "$L0")" "$s0" "leg 0 after a refused split brain"
assert_eq "$(leg_sum "$L1")" "$s1" "leg 1 after a refused split brain"

log "mount --prefer leg1: leg 1's side wins"
fm_mount --prefer "$L1" "$L0" "$L1" "$T/mnt"
fm_wait_leg_state "$T/mnt" "$L0" in_sync 60
fm_wait_sync_idle "$T/mnt" 60
v=$(fm_sync_get "$T/mnt" resynced_regions);  assert_eq "$v" 64 "regions rebuilt (wholly)"
cmp <(dd if="$img" bs=1M skip=30 count=1 iflag=direct status=none) "$T/y" ||
	fail "the image does not hold the preferred side's data at 30 MiB"
fm_umount "$T/mnt"
assert_legs_equal "$L0" "$L1" >/dev/null
leg_read "$L0" $((30 << 20)) $((1 << 20)) | cmp - "$T/y" || fail "leg 0 kept its own write"
leg_read "$L0" $((40 << 20)) $((1 << 20)) | cmp - "$T/z" || fail "leg 0 lacks leg 1's write"
fm_mount "$L0" "$L1" "$T/mnt"
v=$(fm_array_degraded "$T/mnt");  assert_eq "$v" false "one array again"
fm_umount "$T/mnt"
log "ok"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The bad-block list (md's bad block log): one 4 KiB block of leg 1 cannot
# be written (`fusemirror inject --write --offset 4M --length 4k`).
#   - a 64 KiB write over it succeeds (io.errors 0); leg 1 stays in sync
#     with 1 bad block, the array is not degraded, a BadBlock event is
#     counted; every other leg write went through;
#   - the image reads back what was written (the block comes from leg 0:
#     leg 1's copy is stale), also after a remount with a cold cache and
#     leg 0 write-mostly (every read would go to leg 1 but for the list);
#     the array has no checksums, which would otherwise catch the stale
#     copy themselves and hide a read that went to it;
#   - offline, examine shows the block in leg 1's list on both legs;
#   - with the fault gone, a write of the block clears it (bad_blocks 0)
#     and the legs end byte-identical.
source "$(dirname "$0")/lib.sh"
cd "$T" || fail "cannot cd to $T"

SIZE=$((64 << 20))
BAD=$((4 << 20))
mkdir "$T/mnt"
fm_create --size "$SIZE" --region-size 1M --checksums=no "$T/leg0" "$T/leg1"
img=$T/mnt/image

fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
head -c $((8 << 20)) /dev/urandom >"$T/data"
dd if="$T/data" of="$img" bs=1M oflag=direct conv=notrunc,fsync status=none

log "block at $BAD of leg 1 cannot be written; a 64 KiB write over it"
fm_ok inject "$T/mnt" "$T/leg1" --write --offset "$BAD" --length 4k
head -c $((64 << 10)) /dev/urandom >"$T/patch"
dd if="$T/patch" of="$T/data" bs=4k seek=$(((BAD >> 12) - 8)) conv=notrunc status=none
dd if="$T/patch" of="$img" bs=4k seek=$(((BAD >> 12) - 8)) oflag=direct conv=notrunc,fsync \
	status=none || fail "the write over the bad block failed"
v=$(fm_io_errors "$T/mnt");                       assert_eq "$v" 0 "errors returned to the client"
v=$(fm_leg_get "$T/mnt" "$T/leg1" state);         assert_eq "$v" in_sync "leg 1 state"
v=$(fm_leg_get "$T/mnt" "$T/leg1" bad_blocks);    assert_eq "$v" 1 "leg 1's bad blocks"
v=$(fm_leg_get "$T/mnt" "$T/leg0" bad_blocks);    assert_eq "$v" 0 "leg 0's bad blocks"
v=$(fm_array_degraded "$T/mnt");                  assert_eq "$v" false "array degraded"
v=$(fm_status_get "$T/mnt" .event_counts.BadBlock); assert_eq "$v" 1 "BadBlock events"
fm status "$T/mnt" >"$T/status.txt"
grep -q "bad blocks: 1" "$T/status.txt" || fail "status does not show leg 1's bad block: $(cat "$T/status.txt")"

for k in 1 2 3; do
	cmp <(dd if="$img" bs=1M count=8 iflag=direct status=none) "$T/data" ||
		fail "read $k of the image differs from what was written"
done
fm_umount "$T/mnt"

log "offline: both legs list the block for leg 1"
for l in leg0 leg1; do
	fm_examine_json "$T/$l" >/dev/null
	v=$(python3 - "$T/examine.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["legs"][0]["table"]
print(" ".join("%d:%d+%d" % (e["slot"], b["offset"], b["length"]) for e in t for b in e["bad_blocks"]))
PY
)
	assert_eq "$v" "1:$BAD+4096" "$l's bad-block list"
done
fm examine "$T/leg0" >"$T/examine.txt"
grep -q "slot 1 .*bytes $BAD + 4096" "$T/examine.txt" ||
	fail "examine does not list the bad block: $(cat "$T/examine.txt")"

log "remount (cold cache), leg 0 write-mostly: reads of the block still avoid leg 1"
fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
v=$(fm_leg_get "$T/mnt" "$T/leg1" bad_blocks);    assert_eq "$v" 1 "leg 1's bad blocks after remount"
fm_ok write-mostly "$T/mnt" "$T/leg0" on
cmp <(dd if="$img" bs=4k skip=$((BAD >> 12)) count=1 iflag=direct status=none) \
	<(dd if="$T/data" bs=4k skip=$((BAD >> 12)) count=1 status=none) ||
	fail "a read of the bad block returned leg 1's stale copy"
cmp <(dd if="$img" bs=1M count=8 iflag=direct status=none) "$T/data" ||
	fail "the image differs from what was written after the remount"
fm_ok write-mostly "$T/mnt" "$T/leg0" off
log "the fault is gone with the restart: rewriting the block clears it"
dd if="$T/data" of="$img" bs=4k skip=$((BAD >> 12)) seek=$((BAD >> 12)) count=1 \
	oflag=direct conv=notrunc,fsync status=none
v=$(fm_leg_get "$T/mnt" "$T/leg1" bad_blocks);    assert_eq "$v" 0 "leg 1's bad blocks after a good write"
fm_umount "$T/mnt"
v=$(fm_examine_get "$T/leg0" .table[1].bad_blocks); assert_eq "$v" "[]" "leg 0's list for leg 1 after the clear"
assert_legs_equal "$T/leg0" "$T/leg1" >/dev/null

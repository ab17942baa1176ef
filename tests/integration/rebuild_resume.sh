#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Rebuilds that outlive a stop, and add during a rebuild (issue 13 item 7),
# through the daemon (sync_speed 256k while a stop must land in the middle of a rebuild,
# 1M while an add must find one running, 4M after):
#   - `add MNT new` (full rebuild), umount after >= 1 MiB of it: examine
#     shows new's slot rebuilding with recovery_offset > 0; mounted again
#     (leg0 leg1 new), the rebuild resumes there: sync.total is the rest,
#     not the whole image;
#   - `add MNT queued` while that runs: the answer says "queued", the leg is
#     rebuilding at once, and is rebuilt after the running pass;
#   - `replace MNT leg1 repl`, umount half-way: examine shows repl replacing
#     slot 1; mounted again with all legs, the replace finishes and leg1 is
#     gone from the status;
#   - `fail` + `remove` queued, writes into 4 of the 8 regions, `add`
#     queued back (a recovery from the bitmap), umount half-way: examine
#     shows its recovery_offset and recovery_from_bitmap; mounted again,
#     the recovery resumes from the bitmap: sync.total is the marked
#     regions past the checkpoint, not the whole rest of the image;
#   - after umount every leg in the array is identical to leg0's data.
source "$(dirname "$0")/lib.sh"
cd "$T" || fail "cannot cd to $T"

SIZE=$((8 << 20))
mkdir "$T/mnt"
fm_create --size "$SIZE" --region-size 1M "$T/leg0" "$T/leg1"
slow=sync_speed_min=256k,sync_speed_max=256k
mid=sync_speed_min=1M,sync_speed_max=1M
fast=sync_speed_min=4M,sync_speed_max=4M
fm_mount -o "$slow" "$T/leg0" "$T/leg1" "$T/mnt"
img=$T/mnt/image
dd if=/dev/urandom of="$img" bs=1M count=8 oflag=direct status=none || fail "write"

# wait_done BYTES: until the running sync action has done BYTES.
wait_done() {
	local i line action sdone total state
	for ((i = 0; i < 600; i++)); do
		line=$(fm_sync_progress "$T/mnt" "$T/leg0") || fail "cannot read the sync progress"
		read -r action sdone total state <<<"$line"
		[[ $action == recover ]] || fail "sync action $action before $1 bytes were done"
		((sdone >= $1)) && return 0
		sleep 0.1
	done
	fail "the rebuild did not reach $1 bytes"
}

# stop_midway LEG BYTES MIN: umount once the running recovery has done
# BYTES; off is then LEG's checkpoint, at least MIN and short of the end.
stop_midway() {
	wait_done "$2"
	fm_umount "$T/mnt"
	off=$(fm_examine_get "$1" .recovery_offset)
	log "${1##*/}: recovery_offset $off"
	((off >= $3 && off < SIZE)) || fail "recovery_offset $off after $2 bytes of the recovery"
}

# resumed_total: sync.total of the pass the mount started, once counted.
resumed_total() {
	local i total=0
	for ((i = 0; i < 100 && total == 0; i++)); do
		total=$(fm_sync_get "$T/mnt" total)
		sleep 0.05
	done
	echo "$total"
}

log "add new, stop after 1 MiB of its rebuild"
fm_ok add "$T/mnt" "$T/new" | grep -q "recovery started" || fail "add: $(cat "$T/fm.out")"
stop_midway "$T/new" $((1 << 20)) $((1 << 20))
v=$(fm_examine_table_state "$T/new" 2);          assert_eq "$v" rebuilding "new's slot"

log "mount again: the rebuild resumes at $off"
fm_mount -o "$mid" "$T/leg0" "$T/leg1" "$T/new" "$T/mnt"
log "add queued during it"
fm_ok add "$T/mnt" "$T/queued" | grep -q "recovery queued" || fail "add while rebuilding: $(cat "$T/fm.out")"
v=$(fm_leg_state "$T/mnt" "$T/queued");          assert_eq "$v" rebuilding "queued leg"
total=$(resumed_total)
assert_eq "$total" $((SIZE - off)) "sync.total of the resumed rebuild"
fm_wait_leg_state "$T/mnt" "$T/new" in_sync 120
fm_wait_leg_state "$T/mnt" "$T/queued" in_sync 120
fm_wait_sync_idle "$T/mnt"

log "replace leg1 with repl, stop half-way"
fm_umount "$T/mnt"
fm_mount -o "$slow" "$T/leg0" "$T/leg1" "$T/new" "$T/queued" "$T/mnt"
fm_ok replace "$T/mnt" "$T/leg1" "$T/repl" >/dev/null
wait_done $((1 << 20))
fm_umount "$T/mnt"
v=$(fm_examine_get "$T/repl" '.table[4].replaces')
assert_eq "$v" 1 "the slot repl replaces (examine)"

log "mount again: the replace finishes and retires leg1"
fm_mount -o "$fast" "$T/leg0" "$T/leg1" "$T/new" "$T/queued" "$T/repl" "$T/mnt"
fm_wait_leg_state "$T/mnt" "$T/repl" in_sync 120
fm_wait_sync_idle "$T/mnt"
v=$(fm_leg_state "$T/mnt" "$T/leg1");            assert_eq "$v" absent "leg1 after the replace"
v=$(fm_array_degraded "$T/mnt");                 assert_eq "$v" false "array degraded"
v=$(fm_io_errors "$T/mnt");                      assert_eq "$v" 0 "errors returned to the client"

log "fail, remove and re-add queued after writes to 4 regions; stop half-way"
fm_umount "$T/mnt"
fm_mount -o "$slow,bitmap_delay=200" "$T/leg0" "$T/new" "$T/queued" "$T/repl" "$T/mnt"
fm_ok fail "$T/mnt" "$T/queued" >/dev/null
fm_ok remove "$T/mnt" "$T/queued" >/dev/null
marked=(1 2 5 7)
for r in "${marked[@]}"; do
	dd if=/dev/urandom of="$img" bs=64k count=1 seek=$((r * 16)) oflag=direct \
		conv=notrunc status=none || fail "write into region $r"
done
v=$(fm_bitmap_get "$T/mnt" set);                 assert_eq "$v" ${#marked[@]} "bitmap.set while degraded"
fm_ok add "$T/mnt" "$T/queued" | grep -q "recovery started" || fail "re-add: $(cat "$T/fm.out")"
stop_midway "$T/queued" $((3 << 19)) $((2 << 20))
v=$(fm_examine_get "$T/queued" .recovery_from_bitmap); assert_eq "$v" true "recovery_from_bitmap (examine)"
fm examine "$T/queued" | grep -q "recovery offset : $off (recovered from the write-intent bitmap)" ||
	fail "examine's text does not say the recovery is from the bitmap: $(fm examine "$T/queued")"
rest=0
for r in "${marked[@]}"; do (((r + 1) << 20 > off)) && rest=$((rest + (1 << 20))); done

log "mount again: the recovery resumes from the bitmap at $off ($rest bytes left)"
fm_mount -o "$fast" "$T/leg0" "$T/new" "$T/queued" "$T/repl" "$T/mnt"
total=$(resumed_total)
assert_eq "$total" "$rest" "sync.total of the resumed recovery (the whole rest: $((SIZE - off)))"
fm_wait_leg_state "$T/mnt" "$T/queued" in_sync 120
fm_wait_sync_idle "$T/mnt"
fm_umount "$T/mnt"
v=$(fm_examine_get "$T/queued" .recovery_from_bitmap); assert_eq "$v" false "recovery_from_bitmap once in sync"
for l in new queued repl; do
	cmp <(data_sum "$T/leg0") <(data_sum "$T/$l") >/dev/null ||
		fail "leg $l differs from leg0"
done
log "ok"

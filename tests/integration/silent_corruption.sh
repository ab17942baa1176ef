#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Silent corruption of one leg's stored data, caught by the per-block
# checksums (create's default):
#   (a) 1% of leg 0's writes get a bit flipped on disk after they land
#       (`inject --flip-writes`); fio writes 48 MiB (crc32c verify headers),
#       the fault is cleared, and fio verifies them with reads going to
#       leg 0 first and a small cache, so verification reads reach the legs.
#       (The fault is off while reads heal: a rewrite corrupted again on its
#       way to the disk would rightly fail the leg, as md fails a disk whose
#       rewrite does not read back.)  fio reads 0 wrong bytes (no verify failure,
#       no error); leg 0 counts checksum errors and corrected reads and
#       stays in sync; leg 1 counts none.  A scrub then finds only blocks
#       that fail their checksum on leg 0 (each differing block is one of
#       leg 0's bad copies: the reads healed what they touched);
#       `scrub --repair` rewrites them from leg 1's verified copies, and a
#       scrub after it finds nothing.
#   (b) writes misdirected on leg 1 (`--misdirect-writes`, 2% of them, in
#       a 16 MiB range) and (c) writes dropped but reported done on leg 0
#       (`--drop-writes`, 2%): fio write, then (fault off) verify reads no
#       wrong byte;
#       `scrub --repair` makes the legs equal.
# At the end the legs' data areas are byte-identical, and fio's data
# verifies through a fresh mount (empty cache) with no checksum error.
# A control: the same block changed on both legs fails the read with EIO
# (no copy verifies), never returning the changed bytes.
source "$(dirname "$0")/lib.sh"
cd "$T" || fail "cannot cd to $T"

SIZE=$((96 << 20))
mkdir "$T/mnt"
fm_create --size "$SIZE" --region-size 1M "$T/leg0" "$T/leg1"
assert_eq "$(fm_examine_get "$T/leg0" .checksums)" true "checksums of a new array"
img=$T/mnt/image
common=(--filename="$img" --direct=1 --ioengine=io_uring --verify=crc32c
	--verify_fatal=1 --do_verify=1 --rw=randwrite --bsrange=4k-64k --iodepth=16)

# scrub_repair_clean WHAT: scrub --repair, then a scrub must find nothing.
scrub_repair_clean() {
	fm_ok scrub --repair --wait "$T/mnt"
	fm_ok scrub --wait "$T/mnt"
	assert_eq "$(fm_sync_get "$T/mnt" mismatches)" 0 "mismatches after scrub --repair ($1)"
}

log "(a) 1% of leg 0's writes bit-flipped on disk"
fm_mount -o read_policy=first,cache_size=4M "$T/leg0" "$T/leg1" "$T/mnt"
fm_ok inject "$T/mnt" "$T/leg0" --flip-writes --probability 0.01 --seed 7
run_fio flip "${common[@]}" --offset=0 --size=48M --do_verify=0
fm_ok inject "$T/mnt" "$T/leg0" --clear
run_fio flip "${common[@]}" --offset=0 --size=48M --verify_only
assert_eq "$(fm_io_errors "$T/mnt")" 0 "errors returned to the client"
assert_eq "$(fm_leg_get "$T/mnt" "$T/leg0" state)" in_sync "leg 0 state"
assert_eq "$(fm_leg_get "$T/mnt" "$T/leg1" checksum_errors)" 0 "leg 1 checksum errors"
ce=$(fm_leg_get "$T/mnt" "$T/leg0" checksum_errors)
corrected=$(fm_leg_get "$T/mnt" "$T/leg0" corrected)
log "leg 0: $ce checksum errors met by reads, $corrected corrected"
((ce > 0 && corrected > 0)) ||
	fail "leg 0 had no checksum error corrected ($ce, $corrected): the fault did not bite"
fm_ok scrub --wait "$T/mnt"
m=$(fm_sync_get "$T/mnt" mismatches)
ce2=$(fm_leg_get "$T/mnt" "$T/leg0" checksum_errors)
assert_eq "$(fm_leg_get "$T/mnt" "$T/leg1" checksum_errors)" 0 "leg 1 checksum errors after a scrub"
# Every mismatch (8 sectors a block) is a copy of leg 0 failing its checksum.
assert_eq "$m" $(((ce2 - ce) * 8)) "mismatched sectors against leg 0's bad blocks found by the scrub"
log "scrub: $m mismatched sectors, all leg 0 blocks failing their checksum"
scrub_repair_clean "bit flips"
fm_umount "$T/mnt"
assert_legs_equal "$T/leg0" "$T/leg1" >/dev/null

log "(b) 2% of leg 1's writes misdirected within 16 MiB"
fm_mount -o read_policy=round-robin,cache_size=4M "$T/leg0" "$T/leg1" "$T/mnt"
fm_ok inject "$T/mnt" "$T/leg1" --misdirect-writes --offset 48M --length 16M \
	--probability 0.02 --seed 8
run_fio misdirect "${common[@]}" --offset=48M --size=16M --do_verify=0
fm_ok inject "$T/mnt" "$T/leg1" --clear
run_fio misdirect "${common[@]}" --offset=48M --size=16M --verify_only
assert_eq "$(fm_io_errors "$T/mnt")" 0 "errors returned to the client (misdirected writes)"
log "leg 1: $(fm_leg_get "$T/mnt" "$T/leg1" checksum_errors) checksum errors"
scrub_repair_clean "misdirected writes"

log "(c) 2% of leg 0's writes dropped but reported done"
fm_ok inject "$T/mnt" "$T/leg0" --drop-writes --offset 64M --length 16M \
	--probability 0.02 --seed 9
run_fio dropped "${common[@]}" --offset=64M --size=16M --do_verify=0
fm_ok inject "$T/mnt" "$T/leg0" --clear
run_fio dropped "${common[@]}" --offset=64M --size=16M --verify_only
assert_eq "$(fm_io_errors "$T/mnt")" 0 "errors returned to the client (dropped writes)"
log "leg 0: $(fm_leg_get "$T/mnt" "$T/leg0" checksum_errors) checksum errors"
scrub_repair_clean "dropped writes"
fm_umount "$T/mnt"
assert_legs_equal "$T/leg0" "$T/leg1" >/dev/null

log "fresh mount: everything fio wrote verifies, no checksum error"
fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
for j in flip:0:48M misdirect:48M:16M dropped:64M:16M; do
	IFS=: read -r name off len <<<"$j"
	run_fio "$name" "${common[@]}" --offset="$off" --size="$len" --verify_only
done
for l in leg0 leg1; do
	assert_eq "$(fm_leg_get "$T/mnt" "$T/$l" checksum_errors)" 0 "$l checksum errors after remount"
done
fm_umount "$T/mnt"

log "control: a block changed on both legs reads as EIO, never as the change"
for l in leg0 leg1; do
	printf 'CHANGED!%.0s' {1..512} | dd of="$T/$l" bs=4096 \
		seek=$((($(data_offset_of "$T/$l") + (8 << 20)) / 4096)) conv=notrunc status=none
done
fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
rc=0
dd if="$img" of="$T/read.out" bs=4096 skip=$(((8 << 20) / 4096)) count=1 iflag=direct \
	status=none 2>"$T/read.err" || rc=$?
((rc != 0)) && grep -q 'Input/output error' "$T/read.err" ||
	fail "a block bad on both legs did not fail with EIO (dd exit $rc: $(cat "$T/read.err"))"
grep -q 'CHANGED!' "$T/read.out" 2>/dev/null && fail "the changed bytes were returned"
fm_umount "$T/mnt"
log "ok"

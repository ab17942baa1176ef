#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Write-mostly legs (md's --write-mostly), through the daemon and the CLI:
#   - `create --write-mostly leg1 leg0 leg1`: examine shows leg1 flagged;
#     mounted (read_policy round-robin, the policy that would spread reads
#     evenly), status shows leg1 write_mostly; reads of the image (O_DIRECT,
#     past the cache) go to leg0 only, and leg1 gets every write;
#   - `write-mostly MNT leg1 off`: leg1 is read again; `... on` again;
#   - `fail MNT leg0`: leg1 serves the reads (fail-over);
#   - `add --write-mostly MNT leg2`: the new leg is flagged and rebuilt;
#   - after umount, examine of every leg shows the flags that were set last,
#     and the legs in sync are identical.
source "$(dirname "$0")/lib.sh"
cd "$T" || fail "cannot cd to $T"

mkdir "$T/mnt"
fm_create --size 32M --region-size 1M --write-mostly "$T/leg1" "$T/leg0" "$T/leg1"
v=$(fm_examine_json "$T/leg0" | python3 -c 'import json,sys; t=json.load(sys.stdin)["legs"][0]["table"]; print(",".join(str(s["write_mostly"]).lower() for s in t))')
assert_eq "$v" "false,true" "examine: write_mostly of slots 0,1"
assert_exit 2 "not one of the legs" "$FM" create --size 32M --write-mostly "$T/other" "$T/x0" "$T/x1"

fm_mount -o read_policy=round-robin "$T/leg0" "$T/leg1" "$T/mnt"
img=$T/mnt/image
v=$(fm_leg_get "$T/mnt" "$T/leg1" write_mostly);  assert_eq "$v" true "leg1 write_mostly"
v=$(fm_leg_get "$T/mnt" "$T/leg0" write_mostly);  assert_eq "$v" false "leg0 write_mostly"
fm_ok status "$T/mnt" | grep -q "write-mostly" || fail "status text does not say write-mostly"

dd if=/dev/urandom of="$img" bs=1M count=16 oflag=direct status=none || fail "write"
sync "$img"

# reads_of LEG: the leg's read count.
reads_of() { fm_leg_get "$T/mnt" "$1" reads; }

# read_image MIB: 16 direct reads of 256 KiB in [MIB, MIB + 4) MiB, at
# descending offsets (no read continues the one before).  Each call reads
# a range not read before: the cache keeps what it read.
read_image() {
	local k
	for ((k = 15; k >= 0; k--)); do
		dd if="$img" of=/dev/null bs=256k skip=$(($1 * 4 + k)) count=1 iflag=direct \
			status=none || fail "read of block $k at $1 MiB"
	done
}

r0=$(reads_of "$T/leg0"); r1=$(reads_of "$T/leg1")
read_image 0
d0=$(($(reads_of "$T/leg0") - r0)); d1=$(($(reads_of "$T/leg1") - r1))
log "write-mostly leg1: leg0 read $d0, leg1 read $d1"
((d0 >= 16)) || fail "leg0 served $d0 reads of 16"
assert_eq "$d1" 0 "reads served by the write-mostly leg"
w0=$(fm_leg_get "$T/mnt" "$T/leg0" writes); w1=$(fm_leg_get "$T/mnt" "$T/leg1" writes)
assert_eq "$w1" "$w0" "writes of leg1 (write-mostly) and leg0"

fm_ok write-mostly "$T/mnt" "$T/leg1" off
v=$(fm_leg_get "$T/mnt" "$T/leg1" write_mostly);  assert_eq "$v" false "leg1 write_mostly after off"
r1=$(reads_of "$T/leg1")
read_image 4
d1=$(($(reads_of "$T/leg1") - r1))
log "write-mostly off: leg1 read $d1"
((d1 >= 4)) || fail "leg1 served only $d1 of 16 round-robin reads once write-mostly was off"
assert_exit 2 "expected on or off" "$FM" write-mostly "$T/mnt" "$T/leg1" maybe
assert_exit 3 "not a leg" "$FM" write-mostly "$T/mnt" "$T/nonexistent" on

fm_ok write-mostly "$T/mnt" "$T/leg1" on
fm_ok fail "$T/mnt" "$T/leg0"
r1=$(reads_of "$T/leg1")
read_image 8
d1=$(($(reads_of "$T/leg1") - r1))
((d1 >= 16)) || fail "the write-mostly leg served $d1 of 16 reads with leg0 failed"

fm_ok add --write-mostly "$T/mnt" "$T/leg2"
fm_wait_leg_state "$T/mnt" "$T/leg2" in_sync 120
v=$(fm_leg_get "$T/mnt" "$T/leg2" write_mostly);  assert_eq "$v" true "leg2 write_mostly"
v=$(fm_io_errors "$T/mnt");                       assert_eq "$v" 0 "errors returned to the client"
fm_umount "$T/mnt"

for l in leg1 leg2; do
	v=$(fm_examine_json "$T/$l" | python3 -c 'import json,sys; t=json.load(sys.stdin)["legs"][0]["table"]; print(",".join(str(s["write_mostly"]).lower() for s in t))')
	assert_eq "$v" "false,true,true" "examine $l: write_mostly of slots 0,1,2"
done
assert_legs_equal "$T/leg1" "$T/leg2" >/dev/null
log "ok"

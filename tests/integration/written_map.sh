#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The written-region map (no initial sync, known-unwritten regions),
# through the real daemon:
#   - `create` of a 1 GiB 2-leg mirror on new sparse files (16 MiB regions)
#     writes no data: each leg file stays (almost) unallocated (du), examine
#     shows 0 regions written, the status too;
#   - a read of a never-written region returns zeroes and is counted as
#     answered without a leg (written.unwritten_reads);
#   - writes into 3 regions (one partly): status written.regions 3 and
#     examine of each leg shows the same 3 regions written on disk;
#   - `add` of a third leg (a used disk: a file full of old bytes): the
#     recovery copies only the written regions (sync.write_bytes = 3
#     regions, sync.read_bytes too) and zeroes the rest (sync.zero_bytes),
#     so the new leg holds zeroes wherever the array was never written;
#   - `fallocate --punch-hole` of a whole region makes it unwritten (reads
#     zeroes, status and, after the umount, examine of every leg); a punch
#     of part of a region keeps it written;
#   - kill -9 of the daemon while fm_crashwriter writes (fsync'd, journalled)
#     into never-written regions: after the remount every acknowledged
#     write reads back (fm_crashwriter verify), the regions it touched are
#     written, and after the umount the three legs are identical;
#   - a read-only mount: status shows the map as loaded (written.regions),
#     and a read of a region never written (punched) is zeroes, from no leg;
#   - legs on loop devices full of old bytes with discard turned off:
#     create changes no byte of their data areas, the image reads as
#     zeroes, a first 8 KiB write into a region leaves the rest of that
#     region zeroes on both legs (and the next region its old bytes), and
#     scrub finds no mismatch;
#   - `create --written-map=no` over legs full of old bytes: no map
#     (examine, status: not tracked), the legs' data areas are emptied
#     (they read as zeroes, from the legs); --written-map=maybe is refused.
source "$(dirname "$0")/lib.sh"
cd "$T" || fail "cannot cd to $T"

SIZE=$((1 << 30))
REGION=$((16 << 20))
NREG=$((SIZE / REGION))
# written_ranges LEG...: "LEG RANGES" per line, the regions written on each
# LEG's disk (one examine for all).
written_ranges() {
	fm_examine_json "$@" | python3 -c '
import json, sys
for l in json.load(sys.stdin)["legs"]:
    print(l["path"], l["written_ranges"])'
}

mkdir "$T/mnt"
fm_create --size "$SIZE" --region-size 16M "$T/leg0" "$T/leg1"
for l in "$T/leg0" "$T/leg1"; do
	kib=$(du -k "$l" | cut -f1)
	((kib < 2048)) || fail "create allocated $kib KiB of $l: it wrote data"
done
fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
img=$T/mnt/image
assert_eq "$(written_ranges "$T/leg0" "$T/leg1")" "$T/leg0 
$T/leg1 " "regions written on the legs after create"
assert_eq "$(fm_status_get "$T/mnt" .written.tracked)" true "status written.tracked"
assert_eq "$(fm_status_get "$T/mnt" .written.regions)" 0 "regions written after create"

# put FILE OFFSET: write FILE into the image at OFFSET (O_DIRECT, fsync).
put() {
	dd if="$1" of="$img" bs=4096 seek=$(($2 / 4096)) oflag=direct conv=notrunc,fsync \
		status=none || fail "writing $1 at $2 failed"
}

log "a never-written region reads as zeroes, from no leg"
before=$(fm_status_get "$T/mnt" .written.unwritten_reads)
dd if="$img" bs=1M iflag=direct skip=$((5 * REGION >> 20)) count=$((REGION >> 20)) \
	status=none | cmp -s - <(head -c "$REGION" /dev/zero) || fail "region 5 does not read as zeroes"
after=$(fm_status_get "$T/mnt" .written.unwritten_reads)
((after > before)) || fail "reads of region 5 were not answered as unwritten ($before -> $after)"

log "write into regions 2, 3 (whole) and 10 (4 KiB)"
head -c $((2 * REGION)) /dev/urandom >"$T/a"
head -c 4096 /dev/urandom >"$T/b"
put "$T/a" $((2 * REGION))
put "$T/b" $((10 * REGION + 8192))
assert_eq "$(fm_status_get "$T/mnt" .written.regions)" 3 "regions written"
assert_eq "$(fm_status_get "$T/mnt" .written.bytes)" $((3 * REGION)) "bytes of written regions"
assert_eq "$(written_ranges "$T/leg0" "$T/leg1")" "$T/leg0 2-3,10
$T/leg1 2-3,10" "regions written on the legs' disks"

log "add a used disk as a third leg: only written regions are copied"
# Old bytes where the array's regions 4..6 will be (the rest sparse: no
# signature anywhere, and quick to make).
truncate -s "$(stat -c %s "$T/leg0")" "$T/leg2"
dd if=/dev/urandom of="$T/leg2" bs=1M seek=$((($(data_offset_of "$T/leg0") + 4 * REGION) >> 20)) \
	count=$((3 * REGION >> 20)) conv=notrunc,fsync oflag=direct status=none || fail "cannot fill $T/leg2"
fm_ok add "$T/mnt" "$T/leg2" >/dev/null
fm_wait_leg_state "$T/mnt" "$T/leg2" in_sync 120
fm_wait_sync_idle "$T/mnt" 120
wb=$(fm_sync_get "$T/mnt" write_bytes)
rb=$(fm_sync_get "$T/mnt" read_bytes)
zb=$(fm_sync_get "$T/mnt" zero_bytes)
log "recovery: read $rb, wrote $wb, zeroed $zb bytes"
assert_eq "$wb" $((3 * REGION)) "bytes copied to the new leg (the written regions)"
assert_eq "$rb" $((3 * REGION)) "bytes read for the new leg"
assert_eq "$zb" $(((NREG - 3) * REGION)) "bytes of unwritten regions zeroed on the new leg"
leg_read "$T/leg2" $((5 * REGION)) "$REGION" | cmp -s - <(head -c "$REGION" /dev/zero) ||
	fail "the new leg's unwritten region 5 still holds its old bytes"
leg_read "$T/leg2" $((2 * REGION)) $((2 * REGION)) | cmp -s - "$T/a" ||
	fail "the new leg lacks regions 2-3"

log "punch a whole region and part of another"
fallocate --punch-hole -o $((2 * REGION)) -l "$REGION" "$img"
fallocate --punch-hole -o $((3 * REGION)) -l $((REGION / 2)) "$img"
assert_eq "$(fm_status_get "$T/mnt" .written.regions)" 2 "regions written after the punches"
dd if="$img" bs=1M iflag=direct skip=$((2 * REGION >> 20)) count=$((REGION >> 20)) \
	status=none | cmp -s - <(head -c "$REGION" /dev/zero) || fail "punched region 2 is not zeroes"
dd if="$img" bs=1M iflag=direct skip=$((3 * REGION >> 20)) count=$((REGION >> 20)) \
	status=none | cmp -s - <(head -c $((REGION / 2)) /dev/zero; tail -c $((REGION / 2)) "$T/a") ||
	fail "region 3 after a punch of its first half"

log "kill -9 while writing into never-written regions"
CW=$(fm_crashwriter_bin)
"$CW" write "$img" "$T/journal" --seed 7 --offset $((40 * REGION - 65536)) \
	--blocks $((3 * REGION / 4096)) --block-size 4096 --fsync-every 8 >"$T/writer.log" 2>&1 &
wpid=$!
sleep 1
pid_alive "$wpid" || fail "the writer stopped before the crash: $(cat "$T/writer.log")"
fm_crash "$T/mnt"
kill -KILL "$wpid" 2>/dev/null || true
wait "$wpid" 2>/dev/null || true
fm_drop_dead_mount "$T/mnt"
fm_crashwriter regions "$T/journal" --region-size "$REGION" >"$T/acked.regions"
[[ -s $T/acked.regions ]] || fail "no write was acknowledged before the crash: $(cat "$T/writer.log")"
written_ranges "$T/leg0" "$T/leg1" "$T/leg2" >"$T/written"
python3 - "$T/acked.regions" "$T/written" <<'PY' || fail "an acknowledged write's region is not written on some leg's disk"
import sys
acked = {int(l) for l in open(sys.argv[1]) if l.strip()}
for line in open(sys.argv[2]):
    leg, _, ranges = line.strip().partition(" ")
    have = set()
    for part in filter(None, ranges.split(",")):
        a, _, b = part.partition("-")
        have.update(range(int(a), int(b or a) + 1))
    missing = acked - have
    if missing:
        sys.exit(f"{leg}: regions {sorted(missing)} acknowledged but not written ({ranges})")
PY
fm_mount "$T/leg0" "$T/leg1" "$T/leg2" "$T/mnt"
fm_wait_sync_idle "$T/mnt" 120
fm_crashwriter verify "$img" "$T/journal" >"$T/verify.log" 2>&1 ||
	fail "acknowledged writes lost: $(cat "$T/verify.log")"
log "verify: $(tail -n1 "$T/verify.log")"
fm_umount "$T/mnt"

written_ranges "$T/leg0" "$T/leg1" "$T/leg2" >"$T/written.after"
while read -r l w; do
	[[ $w == 3,10,* ]] || fail "$l: regions written on disk after the umount: $w (2 was punched)"
	[[ $w == "$(cut -d' ' -f2 <"$T/written.after" | head -n1)" ]] ||
		fail "$l: regions written on disk differ between the legs: $(cat "$T/written.after")"
done <"$T/written.after"
# The legs are equal: their written regions byte for byte; elsewhere they
# hold no data at all (holes: never written, punched, or zeroed by the
# recovery), which also keeps this quick on a 1 GiB image.
python3 - "$(data_offset_of "$T/leg0")" "$SIZE" "$REGION" "$T/written.after" \
	"$T/leg0" "$T/leg1" "$T/leg2" <<'PY' || fail "the legs differ after the umount"
import os, sys
doff, size, region = (int(x) for x in sys.argv[1:4])
ranges = open(sys.argv[4]).read().split()[1]
written = set()
for part in ranges.split(","):
    a, _, b = part.partition("-")
    written.update(range(int(a), int(b or a) + 1))
legs = sys.argv[5:]
fds = [os.open(l, os.O_RDONLY) for l in legs]
for leg, fd in zip(legs, fds):
    off = doff
    while off < doff + size:
        try:
            start = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:
            break
        if start >= doff + size:
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), doff + size)
        for r in range((start - doff) // region, (end - 1 - doff) // region + 1):
            if r not in written:
                sys.exit(f"{leg}: data in unwritten region {r}")
        off = end
for r in sorted(written):
    data = [os.pread(fd, region, doff + r * region) for fd in fds]
    for leg, d in zip(legs[1:], data[1:]):
        if d != data[0]:
            sys.exit(f"{leg}: region {r} differs from {legs[0]}")
PY
log "read-only mount: status shows the map as it was at the mount"
nw=$(python3 -c '
import sys
n = 0
for part in sys.argv[1].split(","):
    a, _, b = part.partition("-")
    n += int(b or a) - int(a) + 1
print(n)' "$(head -n1 "$T/written.after" | cut -d' ' -f2)")
fm_mount -o ro "$T/leg0" "$T/leg1" "$T/leg2" "$T/mnt"
assert_eq "$(fm_status_get "$T/mnt" .written.tracked)" true "status written.tracked, read-only"
assert_eq "$(fm_status_get "$T/mnt" .written.regions)" "$nw" "regions written, read-only"
dd if="$img" bs=1M iflag=direct skip=$((2 * REGION >> 20)) count=$((REGION >> 20)) \
	status=none | cmp -s - <(head -c "$REGION" /dev/zero) || fail "read-only: region 2 is not zeroes"
(($(fm_status_get "$T/mnt" .written.unwritten_reads) > 0)) ||
	fail "read-only: the read of region 2 was not answered as unwritten"
fm status "$T/mnt" | grep -q "written: $nw of $NREG regions" ||
	fail "read-only: status text: $(fm status "$T/mnt" | grep written:)"
fm_umount "$T/mnt"

# Legs on block devices that cannot unmap, full of old bytes: create writes
# nothing there, a never-written region reads as zeroes, the first write
# into a region zeroes the rest of that region on every leg (the zeroes
# are written: the devices have no discard), and scrub finds the legs
# equal.
log "legs on loop devices full of old bytes, without discard"
LIMG=$((32 << 20))
LREG=$((1 << 20))
lo=()
for i in 0 1; do
	head -c $((LIMG + (8 << 20))) /dev/urandom >"$T/old$i"
	cp "$T/old$i" "$T/before$i"
	loop_attach "$T/old$i"
	lo+=("$LOOPDEV")
	q=/sys/block/${LOOPDEV#/dev/}/queue
	echo 0 >"$q/discard_max_bytes" || fail "cannot turn discard off on $LOOPDEV"
	if [[ -e $q/write_zeroes_unmap_max_bytes ]]; then
		echo 0 >"$q/write_zeroes_unmap_max_bytes" || fail "cannot forbid unmapping on $LOOPDEV"
	fi
	! blkdiscard -l "$LREG" "$LOOPDEV" 2>/dev/null || fail "$LOOPDEV still discards"
done
# --force: the old bytes are random, and in 1 of ~10^5 devices blkid
# reads a signature into them (a CI run met "jbd": ext's 2-byte magic and
# one feature bit), which create rightly refuses to overwrite unasked.
fm_create --force --size "$LIMG" --region-size 1M "${lo[@]}"
doff=$(data_offset_of "${lo[0]}")
# data_of DEV|FILE OFF LEN: bytes of the data area (around the page cache).
data_of() {
	dd if="$1" bs=64k iflag=direct,skip_bytes,count_bytes skip=$((doff + $2)) count="$3" \
		status=none
}
for i in 0 1; do
	cmp -s <(data_of "${lo[i]}" 0 "$LIMG") <(data_of "$T/before$i" 0 "$LIMG") ||
		fail "create wrote into the data area of ${lo[i]}"
done
fm_mount "${lo[@]}" "$T/mnt"
dd if="$img" bs=1M iflag=direct count=$((LIMG >> 20)) status=none |
	cmp -s - <(head -c "$LIMG" /dev/zero) || fail "the new array on ${lo[*]} does not read as zeroes"
head -c 8192 /dev/urandom >"$T/c"
dd if="$T/c" of="$img" bs=4096 seek=$(((5 * LREG + 12288) / 4096)) oflag=direct \
	conv=notrunc,fsync status=none || fail "writing into region 5 of the loop array failed"
fm_ok scrub --wait "$T/mnt"
assert_eq "$(fm_sync_get "$T/mnt" mismatches)" 0 "scrub mismatches on the loop devices"
assert_eq "$(fm_status_get "$T/mnt" .written.regions)" 1 "regions written on the loop array"
fm_umount "$T/mnt"
for i in 0 1; do
	cmp -s <(data_of "${lo[i]}" $((5 * LREG)) "$LREG") \
		<(head -c 12288 /dev/zero; cat "$T/c"; head -c $((LREG - 12288 - 8192)) /dev/zero) ||
		fail "${lo[i]}: region 5 is not zeroes around the 8 KiB written"
	cmp -s <(data_of "${lo[i]}" $((4 * LREG)) "$LREG") \
		<(data_of "$T/before$i" $((4 * LREG)) "$LREG") ||
		fail "${lo[i]}: never-written region 4 changed"
	loop_detach "${lo[i]}"
done

log "create --written-map=no: no map, the legs are emptied"
rc=0
fm create --written-map=maybe --size 16M "$T/n0" "$T/n1" >/dev/null 2>"$T/err" || rc=$?
assert_eq "$rc" 2 "exit status of create --written-map=maybe"
grep -q -- "--written-map=maybe: expected yes or no" "$T/err" ||
	fail "create --written-map=maybe: message: $(cat "$T/err")"
[[ ! -e $T/n0 ]] || fail "a refused create made $T/n0"
head -c $((20 << 20)) /dev/urandom >"$T/n0"
cp "$T/n0" "$T/n1"
fm_create --written-map=no --force --size 16M --region-size 1M "$T/n0" "$T/n1"
assert_eq "$(fm_examine_json "$T/n0" | python3 -c '
import json, sys; print(json.load(sys.stdin)["legs"][0]["written_map"])')" False "examine written_map"
mkdir "$T/mnt2"
fm_mount "$T/n0" "$T/n1" "$T/mnt2"
assert_eq "$(fm_status_get "$T/mnt2" .written.tracked)" false "status written.tracked"
dd if="$T/mnt2/image" bs=1M iflag=direct status=none | cmp -s - <(head -c $((16 << 20)) /dev/zero) ||
	fail "the image of a --written-map=no array does not read as zeroes"
assert_eq "$(fm_status_get "$T/mnt2" .written.unwritten_reads)" 0 "reads answered without a leg"
fm_umount "$T/mnt2"
log "ok ($SECONDS s)"

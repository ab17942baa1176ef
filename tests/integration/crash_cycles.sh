#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Crash cycles: the write-intent bitmap and resync after kill -9.
# A 2-leg array with 1 MiB regions; CYCLES times (default 20):
#   - fm_crashwriter writes random 4 KiB blocks (O_DIRECT, an fsync every
#     FSYNC_EVERY writes, each fsync's acknowledged blocks journalled on
#     another file system) in a random window of the image;
#   - after a random 0.3 .. 1.5 s (and not before the writer's first
#     acknowledged fsync) the DAEMON is killed with SIGKILL (the writer's
#     I/O then fails; it is killed too), its dead mount dropped;
#   - offline, `fusemirror examine --json` of both legs: both superblocks
#     are unclean; the union U of their set bitmap regions must contain
#       * every region where the legs' data areas differ (the bitmap's
#         promise: a bit is durable before the first write to its region),
#       * every region holding a block acknowledged in this cycle (written
#         less than 2 s ago: bits are cleared only after bitmap_delay of
#         idleness, set to 30 s here);
#   - remount: the array resyncs online; once status says sync idle,
#     |differing regions| <= sync.resynced_regions <= |U| (only the regions
#     of the bitmap were copied, and at least those that differed), and
#     sync.write_bytes is 4 KiB per block that differed between the legs
#     (the resync compares per block: 0 when the legs never differed);
#   - `fm_crashwriter verify`: every acknowledged block of every cycle so
#     far holds its acknowledged generation or a later one, never-written
#     blocks are zero, no block is torn or misplaced;
#   - a clean `fusemirror umount`; the legs' data areas are byte-identical
#     (compared region by region each cycle, by sha256 at the end).
# The array has per-block checksums (create's default): after every resync
# no block may fail its checksum (a verify read would get EIO, and the legs'
# checksum error counts must stay 0).
# Controls at the end: a block overwritten with garbage on both legs must
# make the verification fail, with EIO (no copy matches its checksum: the
# garbage is never returned) (so a verify that checks nothing cannot pass);
# a block changed on one leg in a region whose bit is set is resynced, one
# in a region whose bit is clear is not (resync copies, guided by the
# bitmap).
#
# Environment: CYCLES (20), FM_CC_SIZE (image, 256M), FM_CC_WINDOW_MAX
# (largest writer window, MiB, 16), FM_CC_FSYNC_EVERY (16), FM_CC_REMOTE=1
# (leg1 is mounted as a remote leg: nbdkit's file plugin serving the file
# leg1 on a unix socket, which stays up while the daemon is killed; the
# offline checks read the file).  CI runs 20 cycles, and 5 with a remote
# leg (crash_cycles_remote); the 'slow' suite 100 cycles on a 1 GiB image,
# and 20 with a remote leg (crash_cycles_remote_long).
source "$(dirname "$0")/lib.sh"
CC_DIR=$(cd "$(dirname "$0")" && pwd)
cd "$T" || fail "cannot cd to $T"    # fio writes its verify state files in the cwd

CYCLES=${CYCLES:-20}
SIZE=${FM_CC_SIZE:-256M}
WINDOW_MAX=${FM_CC_WINDOW_MAX:-16}
FSYNC_EVERY=${FM_CC_FSYNC_EVERY:-16}
REGION=$((1 << 20))
BS=4096
# Bits are cleared only after bitmap_delay of idleness: 30 s, so that a
# stall of the machine cannot clear the bit of a region the writer wrote
# early in a cycle before the crash (each cycle writes for 0.3 .. 1.5 s).
MOPTS=(-o bitmap_delay=30000)

CW=$(fm_crashwriter_bin)
mkdir "$T/mnt"
fm_create --size "$SIZE" --region-size 1M "$T/leg0" "$T/leg1"
MLEG1=$T/leg1	# leg1 as the daemon sees it
if [[ ${FM_CC_REMOTE:-0} == 1 ]]; then
	cp "$T/leg1" "$T/remote"	# nbd_lib.sh serves $T/remote: leg1 is it
	rm "$T/leg1"
	ln -s remote "$T/leg1"
	source "$CC_DIR/nbd_lib.sh"
	nbd_start
	MLEG1=$URI
fi
assert_eq "$(fm_examine_get "$T/leg0" .checksums)" true "checksums of a new array"
size=$(image_size_of "$T/leg0")
img=$T/mnt/image
journal=$T/journal      # on the disk file system, not on the FUSE mount

# differing_blocks LEG0 LEG1 REGIONS_FILE: how many 4 KiB blocks of the
# regions listed differ between the legs' data areas (no daemon running).
differing_blocks() {
	python3 - "$1" "$2" "$3" "$(data_offset_of "$1")" "$(data_offset_of "$2")" "$REGION" <<'PY'
import sys
a, b, regions, oa, ob, rs = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
n = 0
with open(a, "rb") as fa, open(b, "rb") as fb:
    for line in open(regions):
        r = int(line)
        fa.seek(oa + r * rs)
        fb.seek(ob + r * rs)
        x, y = fa.read(rs), fb.read(rs)
        n += sum(x[k:k + 4096] != y[k:k + 4096] for k in range(0, min(len(x), len(y)), 4096))
print(n)
PY
}

# subset A B: every line of file A is in file B.
subset() {
	[[ -z $(comm -23 <(sort "$1") <(sort "$2")) ]]
}

fm_mount "${MOPTS[@]}" "$T/leg0" "$MLEG1" "$T/mnt"
t_all=$SECONDS
for ((c = 1; c <= CYCLES; c++)); do
	t0=${EPOCHREALTIME/./}
	# A window of 1 .. WINDOW_MAX MiB at a random 4 KiB-aligned offset
	# (not region-aligned: writes straddle region boundaries).
	wmib=$((1 + RANDOM % WINDOW_MAX))
	nb=$((wmib * REGION / BS))
	off=$(((RANDOM * 32768 + RANDOM) % ((size - nb * BS) / BS + 1) * BS))

	"$CW" write "$img" "$journal" --seed "$c" --offset "$off" --blocks "$nb" \
		--block-size "$BS" --fsync-every "$FSYNC_EVERY" >"$T/writer.log" 2>&1 &
	wpid=$!
	sleep_ms_between 300 1500
	# A cycle with nothing acknowledged tests nothing: on a loaded machine
	# the first fsync can take longer than the window, so the crash waits
	# for one (up to a minute).
	for ((w = 0; w < 600; w++)); do
		pid_alive "$wpid" || break
		[[ -n $(fm_crashwriter regions "$journal" --region-size "$REGION") ]] && break
		sleep 0.1
	done
	pid_alive "$wpid" || fail "cycle $c: the writer stopped before the crash: $(cat "$T/writer.log")"

	fm_crash "$T/mnt"
	[[ -z ${NBD_PID:-} ]] || nbd_after_client_kill
	kill -KILL "$wpid" 2>/dev/null || true
	wait "$wpid" 2>/dev/null || true
	fm_drop_dead_mount "$T/mnt"

	fm_crashwriter regions "$journal" --region-size "$REGION" >"$T/acked.regions"
	[[ -s $T/acked.regions ]] ||
		fail "cycle $c: no write was acknowledged before the crash: $(cat "$T/writer.log")"

	# Offline: what the legs say.
	for l in leg0 leg1; do
		v=$(fm_examine_get "$T/$l" .clean)
		assert_eq "$v" false "cycle $c: $l's clean flag after kill -9"
	done
	fm_bitmap_regions "$T/leg0" "$T/leg1" >"$T/bitmap.regions"
	legs_differing_regions "$REGION" "$T/leg0" "$T/leg1" >"$T/differ.regions"
	nu=$(wc -l <"$T/bitmap.regions")
	nd=$(wc -l <"$T/differ.regions")
	nblk=$(differing_blocks "$T/leg0" "$T/leg1" "$T/bitmap.regions")
	subset "$T/differ.regions" "$T/bitmap.regions" ||
		fail "cycle $c: the legs differ in regions whose bit is not set: $(comm -23 \
			<(sort "$T/differ.regions") <(sort "$T/bitmap.regions") | tr '\n' ' ')"
	subset "$T/acked.regions" "$T/bitmap.regions" ||
		fail "cycle $c: regions written in the last 2 s have no bit set: $(comm -23 \
			<(sort "$T/acked.regions") <(sort "$T/bitmap.regions") | tr '\n' ' ')"

	# Remount: resync of the bitmap's regions, online.
	fm_mount "${MOPTS[@]}" "$T/leg0" "$MLEG1" "$T/mnt"
	fm_wait_sync_idle "$T/mnt" 120
	resynced=$(fm_sync_get "$T/mnt" resynced_regions)
	((resynced <= nu)) || fail "cycle $c: resynced $resynced regions, but only $nu bits were set"
	((resynced >= nd)) || fail "cycle $c: resynced $resynced regions, but $nd differed"
	written=$(fm_sync_get "$T/mnt" write_bytes)
	((written == nblk * BS)) ||
		fail "cycle $c: the resync wrote $written bytes, but $nblk blocks differed (want $((nblk * BS)))"
	if ((nd > 0)); then
		last=$(fm_sync_get "$T/mnt" last_action)
		assert_eq "$last" resync "cycle $c: sync.last_action after an unclean stop"
	fi

	fm_crashwriter verify "$img" "$journal" >"$T/verify.log" 2>&1 ||
		fail "cycle $c: $(cat "$T/verify.log")"
	for l in "$T/leg0" "$MLEG1"; do
		assert_eq "$(fm_leg_get "$T/mnt" "$l" checksum_errors)" 0 \
			"cycle $c: $l's checksum errors after resync and verify"
	done
	fm_umount "$T/mnt"
	# (A region-by-region comparison: faster than two sha256 of the legs,
	# and it names the regions; assert_legs_equal runs at the end.)
	legs_differing_regions "$REGION" "$T/leg0" "$T/leg1" >"$T/differ.after"
	[[ ! -s $T/differ.after ]] ||
		fail "cycle $c: the legs differ after resync and umount, regions: $(tr '\n' ' ' <"$T/differ.after")"

	log "cycle $c/$CYCLES: ${wmib} MiB at $((off >> 10)) KiB," \
		"$(wc -l <"$T/acked.regions") regions acked, $nu bits set, $nd differed," \
		"$resynced resynced, $written bytes written, $(((${EPOCHREALTIME/./} - t0) / 1000)) ms"
	((c == CYCLES)) || fm_mount "${MOPTS[@]}" "$T/leg0" "$MLEG1" "$T/mnt"
done
log "$CYCLES cycles in $((SECONDS - t_all)) s; last verify: $(tail -n1 "$T/verify.log")"
assert_legs_equal "$T/leg0" "$T/leg1" >/dev/null

log "control: garbage in an acknowledged range must fail the verification"
head -c "$BS" /dev/urandom >"$T/garbage"
for l in leg0 leg1; do
	dd if="$T/garbage" of="$T/$l" bs="$BS" seek=$((($(data_offset_of "$T/$l") + off) / BS)) \
		conv=notrunc status=none
done
fm_mount "${MOPTS[@]}" "$T/leg0" "$MLEG1" "$T/mnt"
rc=0
fm_crashwriter verify "$img" "$journal" >"$T/verify.log" 2>&1 || rc=$?
if ((rc != 1)) || ! grep -q 'Input/output error' "$T/verify.log"; then
	fail "verify did not get EIO for a garbage block on both legs (exit $rc; the checks above prove nothing): $(cat "$T/verify.log")"
fi
fm_umount "$T/mnt"

# The legs rarely differ after a kill -9 (both legs' writes are issued
# together), so the checks above seldom see resync copy anything.  Control:
# after one more crash, a block of leg 1 is changed in a region whose bit
# is set (A) and in one whose bit is clear (B), as a write that reached
# only one leg would leave them.  The resync must make the legs equal in A
# (whichever leg it copies from) and must not touch B: afterwards the legs
# differ in exactly B (a full copy, or one ignoring the bitmap, fails).
log "control: resync copies the regions whose bit is set, and only those"
fm_mount "${MOPTS[@]}" "$T/leg0" "$MLEG1" "$T/mnt"
"$CW" write "$img" "$T/journal2" --seed 999 --offset "$off" --blocks 256 --block-size "$BS" \
	--fsync-every 4 >"$T/writer.log" 2>&1 &
wpid=$!
sleep 0.5
fm_crash "$T/mnt"
[[ -z ${NBD_PID:-} ]] || nbd_after_client_kill
kill -KILL "$wpid" 2>/dev/null || true
wait "$wpid" 2>/dev/null || true
fm_drop_dead_mount "$T/mnt"
fm_bitmap_regions "$T/leg0" "$T/leg1" >"$T/bitmap.regions"
a=$(head -n1 "$T/bitmap.regions")
[[ -n $a ]] || fail "no bit set after a crash under the writer"
b=$(python3 -c 'import sys; s = {int(l) for l in open(sys.argv[1])}; print(next(r for r in range(int(sys.argv[2])) if r not in s))' \
	"$T/bitmap.regions" $((size / REGION)))
doff=$(data_offset_of "$T/leg1")
for r in "$a" "$b"; do
	head -c "$BS" /dev/urandom | dd of="$T/leg1" bs="$BS" seek=$(((doff + r * REGION + 2 * BS) / BS)) \
		conv=notrunc status=none
done
nblk=$(differing_blocks "$T/leg0" "$T/leg1" "$T/bitmap.regions")
((nblk >= 1)) || fail "control: the changed block of region $a does not differ"
fm_mount "${MOPTS[@]}" "$T/leg0" "$MLEG1" "$T/mnt"
fm_wait_sync_idle "$T/mnt" 120
assert_eq "$(fm_sync_get "$T/mnt" write_bytes)" $((nblk * BS)) \
	"control: bytes the resync wrote ($nblk blocks differed in the regions whose bit is set)"
fm_umount "$T/mnt"
legs_differing_regions "$REGION" "$T/leg0" "$T/leg1" >"$T/differ.after"
assert_eq "$(tr '\n' ' ' <"$T/differ.after")" "$b " \
	"regions differing after resync (changed: $a, bit set; $b, bit clear)"

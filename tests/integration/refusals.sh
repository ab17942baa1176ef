#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Refusals.  Each gives its message and exit code (src/cli/cli.h: 2 usage,
# 3 leg refused, 4 mount failed, 5 no daemon), leaves every leg's bytes
# unchanged (sha256 of every leg file before and after), mounts nothing
# and leaves no daemon behind:
#   mount: a foreign leg (of another array), a damaged superblock (bad crc,
#   on the first or the second leg), a leg truncated smaller, the same leg
#   twice (same path, hard link, symlink, a `cp` copy: same leg UUID), legs
#   in use by another mount (which keeps working), a missing leg path, an
#   array of 2 given 1 leg, bad options, bad config files, a missing mount
#   point;
#   create: a leg holding an ext4 file system (accepted with --force), a leg
#   too small (with and without --size), the same leg twice (path, link);
#   status / umount where no daemon serves: exit 5;
#   a read-only mount refuses writes and changes no byte of the legs;
#   late refusals, found after assembly (-o block_size that does not divide
#   the image size; a mount point another daemon serves), change no byte
#   either.
source "$(dirname "$0")/lib.sh"

SIZE=$((8 << 20))
mkdir "$T/mnt" "$T/mnt2" "$T/empty"

# Every leg-like file of the test, and their sums.
snapshot() {
	sha256sum "$T"/*.leg >"$T/sums"
}
assert_unchanged() {
	sha256sum "$T"/*.leg >"$T/sums.after"
	cmp -s "$T/sums" "$T/sums.after" ||
		fail "$1: legs changed (or appeared): $(diff "$T/sums" "$T/sums.after" || true)"
}
assert_no_stray_daemon() {
	local p
	for p in $(_fm_our_daemons); do
		[[ $p == "${1:-}" ]] || fail "$2: a daemon (pid $p) is running: $(tr '\0' ' ' <"/proc/$p/cmdline")"
	done
}

# refuse WHAT CODE PATTERN CMD...: CMD fails as said, and nothing changed.
refuse() {
	local what=$1
	shift
	snapshot
	assert_exit "$@"
	assert_unchanged "$what"
	# The mount point of a daemon kept on purpose is rightly mounted.
	local target
	target=$(realpath -m "${*: -1}")
	[[ $target == "${KEEP_MNT:-}" ]] || assert_not_mounted "$target"
	assert_no_stray_daemon "${KEEP_PID:-}" "$what"
	log "refused as expected: $what: $(head -n1 "$T/last.err")"
}

# flip_byte FILE OFFSET: invert one byte in place.
flip_byte() {
	python3 - "$@" <<'PY'
import sys
path, off = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(off)
    b = f.read(1)
    f.seek(off)
    f.write(bytes([b[0] ^ 0xFF]))
PY
}

fm_create --size "$SIZE" "$T/a0.leg" "$T/a1.leg"
fm_create --size "$SIZE" "$T/b0.leg" "$T/b1.leg"
fm_create --size "$SIZE" "$T/s0.leg" "$T/s1.leg"

# Something to lose: data in array A.
fm_mount "$T/a0.leg" "$T/a1.leg" "$T/mnt"
head -c $((3 << 20)) /dev/urandom >"$T/adata"
dd if="$T/adata" of="$T/mnt/image" bs=1M seek=2 conv=notrunc,fsync status=none
fm_umount "$T/mnt"
assert_legs_equal "$T/a0.leg" "$T/a1.leg" >/dev/null

log "mount refusals"
refuse "foreign leg" 3 'belongs to array' \
	"$FM" mount "$T/a0.leg" "$T/b1.leg" "$T/mnt"
refuse "foreign leg (other order)" 3 'belongs to array' \
	"$FM" mount "$T/b0.leg" "$T/a1.leg" "$T/mnt"

for l in a0 a1; do
	flip_byte "$T/$l.leg" 1000
	refuse "bad crc on $l" 3 "leg $T/$l.leg: superblock is damaged \(checksum" \
		"$FM" mount "$T/a0.leg" "$T/a1.leg" "$T/mnt"
	flip_byte "$T/$l.leg" 1000
done

truncate -s $((6 << 20)) "$T/s1.leg"
refuse "leg truncated smaller" 3 "leg $T/s1.leg: is [0-9]+ bytes, smaller than" \
	"$FM" mount "$T/s0.leg" "$T/s1.leg" "$T/mnt"
rm "$T/s0.leg" "$T/s1.leg"

refuse "same path twice" 3 'given twice' \
	"$FM" mount "$T/a0.leg" "$T/a0.leg" "$T/mnt"
ln "$T/a0.leg" "$T/a0-hardlink.leg"
refuse "hard link of a leg" 3 'given twice \(same file as' \
	"$FM" mount "$T/a0.leg" "$T/a0-hardlink.leg" "$T/mnt"
rm "$T/a0-hardlink.leg"
ln -s "$T/a0.leg" "$T/a0-symlink"
refuse "symlink to a leg" 3 'given twice \(same file as' \
	"$FM" mount "$T/a0-symlink" "$T/a0.leg" "$T/mnt"
cp --sparse=always "$T/a0.leg" "$T/a0-copy.leg"
refuse "cp copy of a leg" 3 'is the same leg as .*a copy of a leg is not a second leg' \
	"$FM" mount "$T/a0.leg" "$T/a0-copy.leg" "$T/mnt"
rm "$T/a0-copy.leg"

refuse "missing leg path" 3 "leg $T/nosuch.leg: No such file" \
	"$FM" mount "$T/a0.leg" "$T/nosuch.leg" "$T/mnt"
refuse "2-leg array given 1 leg" 3 'has 2 legs; leg 1 .* was not given' \
	"$FM" mount "$T/a0.leg" "$T/mnt"
refuse "2-leg array given only its second leg" 3 'has 2 legs; leg 0 .* was not given' \
	"$FM" mount "$T/a1.leg" "$T/mnt"

refuse "-o nosuchopt" 2 "unknown mount option 'nosuchopt'" \
	"$FM" mount -o nosuchopt "$T/a0.leg" "$T/a1.leg" "$T/mnt"
refuse "-o cache_mode=bogus" 2 'cache_mode=bogus: expected writeback or writethrough' \
	"$FM" mount -o cache_mode=bogus "$T/a0.leg" "$T/a1.leg" "$T/mnt"
refuse "-o block_size=3000" 2 'block_size=3000: expected a power of two' \
	"$FM" mount -o block_size=3000 "$T/a0.leg" "$T/a1.leg" "$T/mnt"
refuse "-o threads=0" 2 'threads=0: expected a number' \
	"$FM" mount -o threads=0 "$T/a0.leg" "$T/a1.leg" "$T/mnt"
refuse "unknown command-line option" 2 'Unknown option --bogus' \
	"$FM" mount --bogus "$T/a0.leg" "$T/a1.leg" "$T/mnt"
refuse "missing mount point" 4 "mount point $T/nosuchdir: does not exist" \
	"$FM" mount "$T/a0.leg" "$T/a1.leg" "$T/nosuchdir"

log "config files"
good_legs="legs=$T/a0.leg;$T/a1.leg;"
printf '[array]\n%s\n[mount]\ncache_mode=writethrough\nfrobnicate=1\n' "$good_legs" >"$T/unknown-key.conf"
refuse "config: unknown key" 2 "config $T/unknown-key.conf: unknown key 'frobnicate' in \[mount\]" \
	"$FM" mount -c "$T/unknown-key.conf" "$T/mnt"
printf '[array]\n%s\nspare=%s\n' "$good_legs" "$T/b0.leg" >"$T/unknown-akey.conf"
refuse "config: unknown key in [array]" 2 "unknown key 'spare' in \[array\]" \
	"$FM" mount -c "$T/unknown-akey.conf" "$T/mnt"
printf '[array]\n%s\n[mounts]\ncache_mode=writeback\n' "$good_legs" >"$T/unknown-group.conf"
refuse "config: unknown group" 2 "config $T/unknown-group.conf: unknown group \[mounts\]" \
	"$FM" mount -c "$T/unknown-group.conf" "$T/mnt"
printf 'this is not a key file\n[array\nlegs = \n' >"$T/malformed.conf"
refuse "config: malformed" 2 "config $T/malformed.conf: " \
	"$FM" mount -c "$T/malformed.conf" "$T/mnt"
printf '[array]\n%s\n[mount]\ncache_mode=bogus\n' "$good_legs" >"$T/bad-value.conf"
refuse "config: bad value" 2 "config $T/bad-value.conf: \[mount\] cache_mode=bogus" \
	"$FM" mount -c "$T/bad-value.conf" "$T/mnt"
refuse "config: missing file" 2 "config $T/nosuch.conf: " \
	"$FM" mount -c "$T/nosuch.conf" "$T/mnt"

# The good config mounts (so the refusals above were about what they say).
printf '[array]\n%s\n[mount]\ncache_mode=writethrough\n' "$good_legs" >"$T/good.conf"
fm_mount -c "$T/good.conf" "$T/mnt"
fm status --json "$T/mnt" | python3 -c '
import json, sys
j = json.load(sys.stdin)
assert j["cache_mode"] == "writethrough", j["cache_mode"]
assert len(j["legs"]) == 2, j["legs"]' || fail "the config file's settings are not in force"
cmp <(dd if="$T/mnt/image" bs=1M skip=2 count=3 status=none) "$T/adata" ||
	fail "array A's data differs after the refusals"

log "legs in use by another mount"
KEEP_PID=$FM_PID
refuse "legs in use" 3 'already in use' \
	"$FM" mount "$T/a0.leg" "$T/a1.leg" "$T/mnt2"
refuse "one leg in use" 3 "leg $T/a1.leg: already in use" \
	"$FM" mount -o cache_mode=writeback "$T/a1.leg" "$T/a0.leg" "$T/mnt2"
KEEP_PID=
is_mounted "$T/mnt" || fail "the first mount went away"
head -c $((1 << 20)) /dev/urandom >"$T/more"
dd if="$T/more" of="$T/mnt/image" bs=4k seek=1 conv=notrunc status=none ||
	fail "cannot write through the first mount after the refused second one"
cmp <(dd if="$T/mnt/image" bs=4k skip=1 count=256 status=none) "$T/more" ||
	fail "the first mount does not read back what was written after the refused second one"
fm_umount "$T/mnt"
assert_legs_equal "$T/a0.leg" "$T/a1.leg" >/dev/null

log "create refusals"
rm "$T/b0.leg" "$T/b1.leg"
truncate -s $((16 << 20)) "$T/x0.leg" "$T/x1.leg"
mkfs.ext4 -q -F "$T/x0.leg"
refuse "create on an ext4 file system" 3 "leg $T/x0.leg: .*ext4 file system.*--force" \
	"$FM" create "$T/x0.leg" "$T/x1.leg"
refuse "create on an ext4 file system (second leg)" 3 "leg $T/x0.leg: .*ext4 file system.*--force" \
	"$FM" create "$T/x1.leg" "$T/x0.leg"
fm_create --force "$T/x0.leg" "$T/x1.leg"
assert_eq "$(head -c 8 "$T/x0.leg")" FUSEMIRR "magic on the forced leg"
refuse "create over an array's leg" 3 "leg $T/x0.leg: .*fusemirror leg \(array [0-9a-f-]+\).*--force" \
	"$FM" create "$T/x0.leg" "$T/x1.leg"
rm "$T/x0.leg" "$T/x1.leg"

truncate -s $((512 << 10)) "$T/tiny.leg"
refuse "create on a tiny leg" 3 'too small for an array' \
	"$FM" create "$T/tiny.leg" "$T/new0.leg"
[[ ! -e $T/new0.leg ]] || fail "a refused create created $T/new0.leg"
truncate -s $((2 << 20)) "$T/y0.leg"
truncate -s $((8 << 20)) "$T/y1.leg"
refuse "create --size larger than a leg" 3 "leg $T/y0.leg: is 2097152 bytes; the array needs" \
	"$FM" create --size 4M "$T/y1.leg" "$T/y0.leg" "$T/new1.leg"
[[ ! -e $T/new1.leg ]] || fail "a refused create created $T/new1.leg"

refuse "create, same path twice" 3 'given twice' \
	"$FM" create --size 4M "$T/y1.leg" "$T/y1.leg"
refuse "create, same new path twice" 3 'given twice' \
	"$FM" create --size 4M "$T/new2.leg" "$T/new2.leg"
[[ ! -e $T/new2.leg ]] || fail "a refused create created $T/new2.leg"
ln "$T/y1.leg" "$T/y1-hardlink.leg"
refuse "create, hard link" 3 'is the same file as' \
	"$FM" create --size 4M "$T/y1.leg" "$T/y1-hardlink.leg"
rm "$T/y1-hardlink.leg"
rm "$T/y0.leg" "$T/y1.leg" "$T/tiny.leg"
refuse "create, bad --size" 2 '--size 12Q: not a size' \
	"$FM" create --size 12Q "$T/a0.leg" "$T/new3.leg"

log "status / umount without a daemon"
refuse "status, no daemon" 5 "no fusemirror daemon serves $T/empty" \
	"$FM" status "$T/empty"
refuse "status --json, no daemon" 5 "no fusemirror daemon serves $T/empty" \
	"$FM" status --json "$T/empty"
refuse "umount, no daemon" 5 "no fusemirror daemon serves $T/empty" \
	"$FM" umount "$T/empty"
refuse "umount, unmounted array's mount point" 5 'no fusemirror daemon serves' \
	"$FM" umount "$T/mnt"
refuse "status of a missing path" 5 "$T/nosuchdir" \
	"$FM" status "$T/nosuchdir"

log "array A is intact"
assert_eq "$(data_sum "$T/a0.leg")" "$(data_sum "$T/a1.leg")" "array A legs"
fm_mount "$T/a0.leg" "$T/a1.leg" "$T/mnt"
cmp <(dd if="$T/mnt/image" bs=1M skip=2 count=3 status=none) "$T/adata" ||
	fail "array A's data differs at the end"
fm_umount "$T/mnt"

log "read-only mount: writes refused, legs untouched (superblocks too)"
snapshot
fm_mount -o ro "$T/a0.leg" "$T/a1.leg" "$T/mnt"
assert_fails 'Read-only file system' \
	dd if=/dev/zero of="$T/mnt/image" bs=4k count=1 conv=notrunc
cmp <(dd if="$T/mnt/image" bs=1M skip=2 count=3 status=none) "$T/adata" ||
	fail "array A's data reads differently read-only"
KEEP_PID=$FM_PID
refuse "rw mount of legs mounted read-only" 3 'already in use' \
	"$FM" mount "$T/a0.leg" "$T/a1.leg" "$T/mnt2"
KEEP_PID=
fm_umount "$T/mnt"
assert_unchanged "read-only mount"

# Refusals found only after the legs were assembled: they must not have
# been touched either (the superblocks are marked in use only once the
# mount is certain to go live).
log "late refusals"
rm -f "$T"/*.leg
fm_create --size 4100K "$T/c0.leg" "$T/c1.leg"
refuse "-o block_size=8k, which does not divide the image size" 2 \
	'block_size=8192 does not divide the image size 4198400' \
	"$FM" mount -o block_size=8k "$T/c0.leg" "$T/c1.leg" "$T/mnt"
fm_create --size "$SIZE" "$T/a0.leg" "$T/a1.leg"
fm_mount "$T/a0.leg" "$T/a1.leg" "$T/mnt"
KEEP_PID=$FM_PID
KEEP_MNT=$(realpath -m "$T/mnt")
refuse "another array on a mount point in use" 4 \
	'already mounted by fusemirror \(daemon pid [0-9]+\); run `fusemirror umount' \
	"$FM" mount "$T/c0.leg" "$T/c1.leg" "$T/mnt"
KEEP_PID=
KEEP_MNT=
fm_umount "$T/mnt"

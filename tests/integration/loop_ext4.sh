#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The image under a loop device with direct I/O (512-byte sectors, then
# 4096-byte sectors): mkfs.ext4, a tree of a few hundred files of random
# sizes (some MiB big), sync, umount, `e2fsck -fn` clean; then a full
# fusemirror umount/mount cycle of the array, a new loop device, fsck
# clean again, and every file's checksum as written; the legs identical.
# Then blkdiscard of a range (with data in and around it) through the loop
# device: the range reads back as zeroes through the loop device, the data
# around it is untouched, and after umount the same holds on both legs'
# data areas.
source "$(dirname "$0")/lib.sh"

SIZE=$((384 << 20))

# make_tree DIR NFILES SEED: deterministic tree of files of random sizes
# (mostly small, a tenth up to 1 MiB, one in twenty 1..6 MiB) in nested
# directories, random (incompressible) contents.
make_tree() {
	python3 - "$@" <<'PY'
import os, random, sys
root, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
dirs = [root]
total = 0
for i in range(n):
    if rnd.random() < 0.08:
        d = os.path.join(rnd.choice(dirs), f"d{i}")
        os.mkdir(d)
        dirs.append(d)
    x = rnd.random()
    if x < 0.05:
        size = rnd.randint(1 << 20, 6 << 20)
    elif x < 0.15:
        size = rnd.randint(64 << 10, 1 << 20)
    else:
        size = rnd.randint(0, 64 << 10)
    with open(os.path.join(rnd.choice(dirs), f"f{i}.bin"), "wb") as f:
        f.write(rnd.randbytes(size))
    total += size
print(f"{n} files, {len(dirs)} directories, {total >> 20} MiB")
PY
}

# variant LABEL NFILES LOSETUP-OPTIONS...
variant() {
	local v=$1 nfiles=$2 ss dev off len win_off win_len
	shift 2
	local leg0=$T/$v-leg0 leg1=$T/$v-leg1 mnt=$T/$v-mnt fs=$T/$v-fs
	local img=$mnt/image

	log "[$v] create, mount, losetup $*"
	mkdir "$mnt" "$fs"
	fm_create --size "$SIZE" "$leg0" "$leg1"
	fm_mount "$leg0" "$leg1" "$mnt"
	loop_attach "$@" "$img"
	dev=$LOOPDEV
	assert_eq "$(losetup -nl -O DIO "$dev" | tr -d ' ')" 1 "$dev direct I/O (losetup --direct-io=on)"
	ss=4096
	[[ " $* " == *" --sector-size 4096 "* ]] || ss=512
	assert_eq "$(blockdev --getss "$dev")" "$ss" "$dev logical sector size"
	assert_eq "$(blockdev --getsize64 "$dev")" "$SIZE" "$dev size"

	log "[$v] mkfs.ext4, a tree of $nfiles files, sync, umount, e2fsck -fn"
	mkfs.ext4 -q -F "$dev" || fail "mkfs.ext4 on $dev failed"
	fs_mount "$dev" "$fs"
	make_tree "$fs" "$nfiles" "$nfiles"
	(cd "$fs" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$T/$v.manifest"
	assert_eq "$(wc -l <"$T/$v.manifest")" "$nfiles" "files in the manifest"
	sync
	umount "$fs"
	e2fsck -fn "$dev" >"$T/$v.fsck1" 2>&1 || fail "e2fsck -fn after the first umount: $(cat "$T/$v.fsck1")"
	# The loop device's flushes (ext4's journal barriers) and discards
	# (mkfs) must reach the daemon, not be answered by the kernel.
	fm status --json "$mnt" | python3 -c '
import json, sys
io = json.load(sys.stdin)["io"]
sys.exit((io["fsyncs"] == 0 or io["fallocates"] == 0 or io["errors"] != 0) and f"io {io}")' ||
		fail "[$v] flushes or discards from the loop device did not reach the daemon"

	log "[$v] detach, fusemirror umount/mount, attach again"
	loop_detach "$dev"
	fm_umount "$mnt"
	assert_legs_equal "$leg0" "$leg1" >/dev/null
	fm_mount "$leg0" "$leg1" "$mnt"
	loop_attach "$@" "$img"
	dev=$LOOPDEV
	e2fsck -fn "$dev" >"$T/$v.fsck2" 2>&1 || fail "e2fsck -fn after remounting the array: $(cat "$T/$v.fsck2")"
	fs_mount -o ro "$dev" "$fs"
	(cd "$fs" && sha256sum --quiet -c "$T/$v.manifest") >"$T/$v.check" 2>&1 ||
		fail "files differ after the remount: $(head -n 20 "$T/$v.check")"
	assert_eq "$(find "$fs" -type f | wc -l)" "$nfiles" "files after the remount"
	umount "$fs"

	# A range that is not block-aligned for the daemon (4 KiB blocks) when
	# the sectors allow it, with random data in and around it first.
	off=$(((200 << 20) + 3 * ss))
	len=$(((8 << 20) + 2 * ss))
	win_off=$((off - (64 << 10) - 3 * ss))
	win_len=$((len + (128 << 10) + 4 * ss))
	log "[$v] blkdiscard -o $off -l $len"
	head -c "$win_len" /dev/urandom >"$T/$v.win"
	dd if="$T/$v.win" of="$dev" bs=64k oflag=direct,seek_bytes seek="$win_off" conv=fsync status=none
	dd if="$dev" bs=64k iflag=direct,skip_bytes,count_bytes skip="$win_off" count="$win_len" \
		status=none | cmp - "$T/$v.win" || fail "data written through $dev does not read back"
	dd if=/dev/zero of="$T/$v.win" bs=64k oflag=seek_bytes iflag=count_bytes \
		seek=$((off - win_off)) count="$len" conv=notrunc status=none
	blkdiscard -f -o "$off" -l "$len" "$dev" 2>"$T/$v.blkdiscard" ||
		fail "blkdiscard on $dev failed: $(cat "$T/$v.blkdiscard")"
	dd if="$dev" bs=64k iflag=direct,skip_bytes,count_bytes skip="$win_off" count="$win_len" \
		status=none | cmp - "$T/$v.win" ||
		fail "after blkdiscard, $dev does not read zeroes in the range and the old data around it"
	loop_detach "$dev"
	fm_umount "$mnt"
	assert_legs_equal "$leg0" "$leg1" >/dev/null
	for l in "$leg0" "$leg1"; do
		leg_read "$l" "$win_off" "$win_len" | cmp - "$T/$v.win" ||
			fail "after blkdiscard and umount, $l does not hold zeroes in the range and the data around it"
	done
	rm -f "$leg0" "$leg1"
}

variant sect512 300 --direct-io=on
variant sect4096 200 --direct-io=on --sector-size 4096

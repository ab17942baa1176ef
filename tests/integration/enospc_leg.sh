#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# A real fault: leg 1 is a sparse file on a 40 MiB tmpfs, for a 96 MiB
# image.  Filling the image (dd of 96 MiB of random data, O_DIRECT, fsync)
# runs leg 1 out of space: its writes fail with ENOSPC and it becomes
# faulty; the writes succeed on leg 0 (dd exits 0, io.errors 0), the array
# is degraded, and the data reads back right through the image and is on
# leg 0.  `fusemirror umount` leaves leg 0 clean.
source "$(dirname "$0")/lib.sh"
cd "$T" || fail "cannot cd to $T"

SIZE=$((96 << 20))
mkdir "$T/mnt" "$T/small"
fs_mount -t tmpfs -o size=40M fusemirror-test "$T/small"
fm_create --size "$SIZE" --region-size 1M "$T/leg0" "$T/small/leg1"
assert_eq "$(stat -c %s "$T/small/leg1")" "$(stat -c %s "$T/leg0")" "size of the sparse leg on tmpfs"
fm_mount "$T/leg0" "$T/small/leg1" "$T/mnt"
img=$T/mnt/image

head -c "$SIZE" /dev/urandom >"$T/data"
log "fill the image: 96 MiB onto a leg with 40 MiB of room"
dd if="$T/data" of="$img" bs=1M oflag=direct conv=notrunc,fsync status=none 2>"$T/dd.err" ||
	fail "dd to the image failed although leg 0 has room: $(cat "$T/dd.err")"
log "tmpfs: $(df -h --output=used,size "$T/small" | tail -n1)"

v=$(fm_leg_get "$T/mnt" "$T/small/leg1" state);  assert_eq "$v" faulty "state of the leg on the full tmpfs"
v=$(fm_leg_get "$T/mnt" "$T/leg0" state);        assert_eq "$v" in_sync "leg 0 state"
v=$(fm_array_degraded "$T/mnt");                 assert_eq "$v" true "array degraded"
v=$(fm_io_errors "$T/mnt");                      assert_eq "$v" 0 "errors returned to the client"
werrs=$(fm_leg_get "$T/mnt" "$T/small/leg1" write_errors)
((werrs > 0)) || fail "the leg on the full tmpfs counts no write error"

log "the data reads back through the image, and is on leg 0"
dd if="$img" bs=1M iflag=direct status=none | cmp - "$T/data" ||
	fail "the image does not read back what was written"
fm_umount "$T/mnt"
leg_read "$T/leg0" 0 "$SIZE" | cmp - "$T/data" || fail "leg 0 does not hold the data"
sb_clean "$T/leg0" || fail "leg 0 is not marked clean after umount"
umount "$T/small"

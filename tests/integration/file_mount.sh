#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Mount over a regular file: the file becomes the image (its size is the
# image size, its contents the array's, status names it), fio with crc32c
# verification works on it, writes reach both legs, and after `fusemirror
# umount` the original file is back, unchanged (size, contents, mode).
source "$(dirname "$0")/lib.sh"

SIZE=$((128 << 20))
fm_create --size "$SIZE" "$T/leg0" "$T/leg1"
head -c $((3 << 20)) /dev/urandom >"$T/vm.img"
chmod 0640 "$T/vm.img"
orig_sum=$(leg_sum "$T/vm.img")
orig_size=$(stat -c %s "$T/vm.img")

fm_mount "$T/leg0" "$T/leg1" "$T/vm.img"
is_mounted "$T/vm.img" || fail "nothing is mounted over $T/vm.img"
assert_eq "$(stat -c %s "$T/vm.img")" "$SIZE" "size of the file mounted over"
assert_eq "$(stat -c %F "$T/vm.img")" "regular file" "type of the file mounted over"
assert_eq "$(stat -c %a "$T/vm.img")" 640 "mode of the file mounted over (kept from the file)"
assert_eq "$(head -c $((3 << 20)) "$T/vm.img" | sha256sum | cut -d' ' -f1)" \
	"$(zero_sum $((3 << 20)))" "the image over the file starts as the new array's zeroes"
fm status --json "$T/vm.img" | python3 -c '
import json, sys
j = json.load(sys.stdin)
sys.exit(j["image"] != sys.argv[1] and f"image {j['"'"'image'"'"']}")' "$T/vm.img" ||
	fail "status does not name the file as the image"

log "fio verify on the file"
common=(--filename="$T/vm.img" --direct=1 --ioengine=io_uring --verify=crc32c
	--verify_fatal=1 --do_verify=1)
run_fio rand4k "${common[@]}" --rw=randwrite --bs=4k --iodepth=32 --size=64M
run_fio seq "${common[@]}" --rw=write --bs=256k --iodepth=8 --offset=64M --size=64M
image_sum=$(sha256sum "$T/vm.img" | cut -d' ' -f1)

log "fusemirror umount"
fm_umount "$T/vm.img"
assert_not_mounted "$T/vm.img"
assert_eq "$(stat -c %s "$T/vm.img")" "$orig_size" "size of the original file after umount"
assert_eq "$(leg_sum "$T/vm.img")" "$orig_sum" "contents of the original file after umount"
assert_eq "$(stat -c %a "$T/vm.img")" 640 "mode of the original file after umount"
assert_eq "$(assert_legs_equal "$T/leg0" "$T/leg1")" "$image_sum" "legs' data areas vs the image"

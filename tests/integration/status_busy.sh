#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# `fusemirror status` and `status --json` while mounted: the JSON parses
# (python3 -m json.tool), names the array, its size and state, 2 legs in
# sync with write counts and bytes > 0 after writes (and reads > 0 after
# reads); the text form says the same.  `fusemirror umount` of an image
# held by a loop device fails with exit 1 and a message that says busy,
# the mount keeps working (through the file and through the loop device,
# status says active), and once the loop device is gone umount succeeds.
source "$(dirname "$0")/lib.sh"

SIZE=$((128 << 20))
mkdir "$T/mnt"
fm_create --size "$SIZE" --name statustest "$T/leg0" "$T/leg1"
fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
img=$T/mnt/image

log "status after writes and reads"
head -c $((8 << 20)) /dev/urandom >"$T/data"
dd if="$T/data" of="$img" bs=1M seek=1 conv=notrunc,fsync status=none
cmp <(dd if="$img" bs=1M skip=1 count=8 status=none) "$T/data" || fail "data does not read back"
# Reads of blocks not cached: past what was just written, but in the same
# (64 MiB) region, which the write made written: a region never written is
# read as zeroes without a leg (the written-region map).
dd if="$img" of=/dev/null bs=1M skip=16 count=16 status=none

fm status --json "$T/mnt" >"$T/status.json" || fail "status --json failed"
python3 -m json.tool "$T/status.json" >/dev/null || fail "status --json is not JSON: $(cat "$T/status.json")"
python3 - "$T/status.json" "$SIZE" "$T" "$FM_PID" <<'PY' || fail "status --json: wrong content (above)"
import json, sys
j = json.load(open(sys.argv[1]))
size, tmp, pid = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
a = j["array"]
errors = []
def want(cond, msg):
    if not cond:
        errors.append(msg)
want(a["size"] == size, f"array.size {a['size']} != {size}")
want(a["state"] == "active", f"array.state {a['state']}")
want(a["name"] == "statustest", f"array.name {a['name']!r}")
want(a["pid"] == pid, f"array.pid {a['pid']} != {pid}")
want(a["readonly"] is False, "array.readonly")
want(len(a["uuid"]) == 36, f"array.uuid {a['uuid']!r}")
want(j["image"] == f"{tmp}/mnt/image", f"image {j['image']!r}")
legs = j["legs"]
want(len(legs) == 2, f"{len(legs)} legs, expected 2")
for i, l in enumerate(legs):
    want(l["path"] == f"{tmp}/leg{i}", f"legs[{i}].path {l['path']!r}")
    want(l["state"] == "in_sync", f"legs[{i}].state {l['state']}")
    want(l["writes"] > 0, f"legs[{i}].writes {l['writes']} after writes")
    want(l["write_bytes"] >= 8 << 20, f"legs[{i}].write_bytes {l['write_bytes']} < 8 MiB written")
    want(l["write_errors"] == 0 and l["read_errors"] == 0, f"legs[{i}] errors")
want(sum(l["reads"] for l in legs) > 0, "no leg counted a read after reads")
want(sum(l["read_bytes"] for l in legs) >= 16 << 20, "legs read less than the 16 MiB read")
want(j["io"]["writes"] > 0 and j["io"]["write_bytes"] >= 8 << 20, f"io {j['io']}")
want(j["io"]["fsyncs"] > 0, "io.fsyncs is 0 after conv=fsync")
want(j["io"]["errors"] == 0, f"io.errors {j['io']['errors']}")
if errors:
    sys.exit("status --json: " + "; ".join(errors) + "\n" + json.dumps(j, indent=1))
PY
fm status "$T/mnt" >"$T/status.txt" || fail "status failed"
grep -q "2 of 2 legs in sync" "$T/status.txt" || fail "status text: $(cat "$T/status.txt")"
for l in leg0 leg1; do
	grep -qF "$T/$l" "$T/status.txt" || fail "status text does not name $l: $(cat "$T/status.txt")"
done
grep -q "($SIZE bytes)" "$T/status.txt" || fail "status text does not give the size: $(cat "$T/status.txt")"

log "umount while a loop device holds the image"
loop_attach "$img"
dev=$LOOPDEV
assert_exit 1 'busy' "$FM" umount "$T/mnt"
log "refused as expected: $(cat "$T/last.err")"
is_mounted "$T/mnt" || fail "the image was unmounted although umount failed"
pid_alive "$FM_PID" || fail "the daemon died after a refused umount"
fm status --json "$T/mnt" | python3 -c 'import json,sys; s = json.load(sys.stdin)["array"]["state"]; sys.exit(s != "active" and f"state {s}")' ||
	fail "status after a refused umount is not active"

log "the mount keeps working"
head -c $((4 << 20)) /dev/urandom >"$T/data2"
dd if="$T/data2" of="$img" bs=1M seek=20 conv=notrunc,fsync status=none ||
	fail "cannot write through the mount after a refused umount"
cmp <(dd if="$img" bs=1M skip=20 count=4 status=none) "$T/data2" ||
	fail "the mount does not read back after a refused umount"
dd if="$T/data" of="$dev" bs=1M seek=40 oflag=direct conv=fsync status=none ||
	fail "cannot write through the loop device after a refused umount"
cmp <(dd if="$img" bs=1M skip=40 count=8 status=none) "$T/data" ||
	fail "a write through the loop device does not read back through the image"

log "detach, umount"
loop_detach "$dev"
fm_umount "$T/mnt"
assert_legs_equal "$T/leg0" "$T/leg1" >/dev/null
for l in leg0 leg1; do
	sb_clean "$T/$l" || fail "$l not clean after umount"
	leg_read "$T/$l" $((20 << 20)) $((4 << 20)) | cmp - "$T/data2" || fail "$l lacks data2"
	leg_read "$T/$l" $((40 << 20)) $((8 << 20)) | cmp - "$T/data" || fail "$l lacks the loop write"
done

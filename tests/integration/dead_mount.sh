#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# A killed daemon's dead mount, and a stop during a resync (issue 11, 2-3):
#   - mounted (daemonized), 8 MiB written in 1 MiB regions, then kill -9:
#     the mount stays, dead;
#   - `status` recognises it: exit 6, says it is a dead fusemirror mount
#     and what to run (`fusemirror mount` again, or `umount -l`);
#   - `fusemirror mount` on it (daemonized, resync slowed to 256 KiB/s)
#     replaces it: exit 0, one fusemirror mount there (not two stacked),
#     and the terminal that ran it got the daemon's "was not stopped
#     cleanly" line before it returned;
#   - `umount` while the resync runs says that the resync stops and
#     resumes at the next mount; the next mount says the array was not
#     stopped cleanly again and resyncs;
#   - a second `mount` on the live mount is refused (exit 4), still one
#     mount; the image holds what was written and the legs end equal.
#   - `mount -o ro -o read_policy=first`: both apply (a second -o adds);
#     a relative LEG given to an admin verb is the caller's (../leg0 from
#     a subdirectory).
source "$(dirname "$0")/lib.sh"
cd "$T" || fail "cannot cd to $T"

SIZE=$((64 << 20))
mkdir "$T/mnt"
fm_create --size "$SIZE" --region-size 1M "$T/leg0" "$T/leg1"

# The fusemirror mounts the kernel lists at MOUNTPOINT.
nr_mounts() {
	awk -v p="$1" '$5 == p { for (i = 7; i <= NF; i++) if ($i == "-") break;
		if ($(i + 1) == "fuse.fusemirror") n++ } END { print n + 0 }' /proc/self/mountinfo
}

log "mount, write 8 MiB, kill -9"
fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
head -c $((8 << 20)) /dev/urandom >"$T/data"
dd if="$T/data" of="$T/mnt/image" bs=1M oflag=direct conv=notrunc status=none
fm_crash "$T/mnt"
assert_eq "$(nr_mounts "$T/mnt")" 1 "fusemirror mounts on $T/mnt after kill -9"

log "status on the dead mount"
assert_exit 6 'dead fusemirror mount' "$FM" status "$T/mnt"
grep -q 'Transport endpoint is not connected' "$T/last.err" ||
	fail "status does not say what a dead mount does: $(cat "$T/last.err")"
grep -q 'fusemirror mount' "$T/last.err" && grep -q "umount -l $T/mnt" "$T/last.err" ||
	fail "status does not say what to run: $(cat "$T/last.err")"
# The other verbs say the same.
assert_exit 6 'dead fusemirror mount' "$FM" umount "$T/mnt"

log "mount on the dead mount replaces it"
fm_mount -o sync_speed_min=256k,sync_speed_max=256k "$T/leg0" "$T/leg1" "$T/mnt"
grep -q 'replaced the dead mount' "$T/mount.err" ||
	fail "mount did not say it replaced the dead mount: $(cat "$T/mount.err")"
grep -Eq 'warning: .*not stopped cleanly: .*resync' "$T/mount.err" ||
	fail "the unclean-stop line did not reach mount's stderr: $(cat "$T/mount.err")"
assert_eq "$(nr_mounts "$T/mnt")" 1 "fusemirror mounts on $T/mnt after the replacing mount"

log "umount during the resync (8 MiB at 256 KiB/s: 32 s)"
assert_eq "$(fm_sync_action "$T/mnt")" resync "sync action just after the mount"
pid=$(fm_daemon_pid "$T/mnt")
assert_exit 0 'resync is .*done: it stops now and resumes .* next mount' "$FM" umount "$T/mnt"
assert_not_mounted "$T/mnt"
wait_pid_gone "$pid" 30 || fail "daemon $pid still runs after umount"

log "the next mount resumes it"
fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
grep -q 'not stopped cleanly' "$T/mount.err" ||
	fail "after a stop during a resync the next mount did not resync: $(cat "$T/mount.err")"

log "a second mount on a live one is refused"
assert_exit 4 'already mounted by fusemirror' "$FM" mount "$T/leg0" "$T/leg1" "$T/mnt"
assert_eq "$(nr_mounts "$T/mnt")" 1 "fusemirror mounts on $T/mnt after the refused mount"

fm_wait_sync_idle "$T/mnt" 60
cmp -n $((8 << 20)) "$T/data" "$T/mnt/image" || fail "the image lost what was written"
fm_umount "$T/mnt"
assert_legs_equal "$T/leg0" "$T/leg1" >/dev/null

log "a second -o adds to the first (mount(8)'s way), it does not replace it"
fm_mount -o ro -o read_policy=first "$T/leg0" "$T/leg1" "$T/mnt"
v=$(fm_status_get "$T/mnt" .array.readonly);    assert_eq "$v" true "readonly after -o ro -o read_policy=first"
v=$(fm_status_get "$T/mnt" .read_policy); assert_eq "$v" first "read_policy after -o ro -o read_policy=first"

log "a relative LEG is the caller's, not the daemon's: inject ../leg0 --show from $T/sub"
mkdir -p "$T/sub"
out=$(cd "$T/sub" && timeout -k 5 30 "$FM" inject "$T/mnt" ../leg0 --show) ||
	fail "inject ../leg0 --show from $T/sub: $out"
[[ $out == *"leg $T/leg0 (slot 0"* ]] || fail "inject ../leg0 --show: $out"
fm_umount "$T/mnt"
log "ok"

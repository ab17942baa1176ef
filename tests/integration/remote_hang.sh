#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Remote legs (NBD, nbdkit's file plugin on a unix socket), continued from
# remote_legs.sh:
#   - a mount while the server is stopped (SIGSTOP: the kernel accepts the
#     connection, nobody handshakes) is refused after remote_connect_timeout
#     (1.5 s, not the default 10 s), naming the leg and the key;
#   - a hung server (SIGSTOP): a write to the image still completes, the
#     remote leg is failed by remote_timeout; while it stays stopped, the
#     reconnection attempts fail after remote_connect_timeout and come every
#     remote_retry_max (1 s: status reconnect_delay_ms stays 1000 after 2
#     attempts, where the default backoff would be 4000); the leg
#     reconnects by itself once the server runs again;
#   - the administrator's `fail` is not undone by itself; `add` re-adds it
#     (only the regions written meanwhile are copied); events: one
#     LegReconnected (the hang), one Add (the administrator's), no Remove;
#   - `add` of a brand-new remote leg keeps remote_connect_timeout past
#     the re-add probe, when it formats the leg (a server that handshakes
#     once, then hangs: refused in 1.5 s, naming the key; the sh plugin
#     spawns a process per callback, so a handshake takes ~0.5 s here);
#   - after umount, the remote leg's data area equals the local legs'.
# The array is mounted from a config file whose legs= names the URI.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/nbd_lib.sh"
cd "$T" || fail "cannot cd to $T"

mkdir "$T/mnt"
truncate -s 32M "$T/leg0" "$T/leg1" "$T/remote"
nbd_start
fm_create --region-size 1M "$T/leg0" "$URI" "$T/leg1"
# The legs, URI included, from a config file.
printf '[array]\nlegs=%s;%s;%s\n[mount]\nremote_timeout=1000\nremote_connect_timeout=1500\nremote_retry_max=1000\n' \
	"$T/leg0" "$URI" "$T/leg1" >"$T/fm.conf"

log "mount while nbdkit is stopped"
nbd_pause
t0=$SECONDS
rc=0
timeout -k 5 60 "$FM" mount --config "$T/fm.conf" "$T/mnt" >"$T/mount.out" 2>"$T/mount.err" || rc=$?
((rc != 0)) || fail "mount succeeded with a stopped server"
! is_mounted "$T/mnt" || fail "mounted with a stopped server"
((SECONDS - t0 < 8)) || fail "the mount waited $((SECONDS - t0)) s for a handshake"
grep -q "finished no NBD handshake in 1500 ms (remote_connect_timeout)" "$T/mount.err" ||
	fail "the refused mount does not say why: $(cat "$T/mount.err")"
kill -CONT "$NBD_PID"
fm_mount -o cache_mode=writethrough,sync_speed_min=200M --config "$T/fm.conf" "$T/mnt"
img=$T/mnt/image
dd if=/dev/urandom of="$img" bs=1M count=4 oflag=direct status=none || fail "first write"

log "stopping nbdkit (SIGSTOP)"
nbd_pause
t0=$SECONDS
dd if=/dev/urandom of="$img" bs=1M seek=8 count=1 oflag=direct conv=notrunc,fsync status=none ||
	fail "a write to the array with a hung remote leg failed"
((SECONDS - t0 < 15)) || fail "a write waited $((SECONDS - t0)) s for a hung server"
log "the write completed in $((SECONDS - t0)) s"
fm_wait_leg_state "$T/mnt" "$URI" faulty 20
two_attempts() {
	local v
	v=$(fm_leg_get "$T/mnt" "$URI" reconnect_attempts) || fail "status: no reconnect_attempts"
	((v >= 2))
}
fm_wait_for "2 failed reconnection attempts" 20 two_attempts
v=$(fm_leg_get "$T/mnt" "$URI" reconnect_delay_ms); assert_eq "$v" 1000 "status: reconnect_delay_ms"
fm_ok status "$T/mnt" | grep -q "remote: disconnected, reconnecting ([0-9]* failed attempts, the next 1.000 s after the last)" ||
	fail "status text lacks the reconnection attempts: $(cat "$T/fm.out")"
kill -CONT "$NBD_PID"
fm_wait_leg_state "$T/mnt" "$URI" in_sync 40
fm_wait_sync_idle "$T/mnt" 30
v=$(fm_leg_get "$T/mnt" "$URI" reconnects); assert_eq "$v" 1 "status: reconnects after the hang"
log "reconnected after the hang"

fm_ok fail "$T/mnt" "$URI" >/dev/null
dd if=/dev/urandom of="$img" bs=1M seek=12 count=1 oflag=direct conv=notrunc status=none || fail "write"
sleep 1.5
assert_eq "$(fm_leg_state "$T/mnt" "$URI")" faulty "an administrator's fail is not reconnected"
v=$(fm_leg_get "$T/mnt" "$URI" reconnecting); assert_eq "$v" false "status: reconnecting after fail"
fm_ok add "$T/mnt" "$URI" >/dev/null
grep -q "bitmap" "$T/fm.out" || log "add said: $(cat "$T/fm.out")"
fm_wait_leg_state "$T/mnt" "$URI" in_sync 30
fm_wait_sync_idle "$T/mnt" 30
assert_eq "$(fm_io_errors "$T/mnt")" 0 "errors returned to the image's clients"
# The hang's reconnection is a LegReconnected; the administrator's add an
# Add; neither a Remove.
v=$(fm_status_get "$T/mnt" .event_counts.LegReconnected); assert_eq "$v" 1 "LegReconnected events"
v=$(fm_status_get "$T/mnt" .event_counts.Add); assert_eq "$v" 1 "Add events"
v=$(fm_status_get "$T/mnt" .event_counts.Remove); assert_eq "$v" 0 "Remove events"

# `add` of a brand-new remote leg: the re-add probe connects (and finds no
# superblock of this array), then formatting it connects again; both keep
# remote_connect_timeout.  nbdkit's sh plugin answers the first handshake
# and hangs every later one for 10 s (its open callback sleeps).
log "add of a new remote leg whose server hangs after the first handshake"
cat >"$T/hang2.sh" <<'SH'
#!/bin/sh
case $1 in
open) n=$(cat "$HANG2_COUNT" 2>/dev/null || echo 0)
      echo $((n + 1)) >"$HANG2_COUNT"
      [ "$n" -eq 0 ] || sleep 10
      echo h ;;
get_size) echo 64M ;;
pread) head -c "$3" /dev/zero ;;
can_write) exit 0 ;;
pwrite) cat >/dev/null ;;
*) exit 2 ;;
esac
SH
chmod +x "$T/hang2.sh"
HANG2_COUNT=$T/hang2.count nbdkit -f --exit-with-parent -U "$T/nbd2.sock" sh "$T/hang2.sh" \
	2>>"$T/nbdkit2.log" &
for ((i = 0; i < 100; i++)); do [[ -S $T/nbd2.sock ]] && break; sleep 0.1; done
[[ -S $T/nbd2.sock ]] || fail "nbdkit sh did not start: $(cat "$T/nbdkit2.log")"
t0=$SECONDS
assert_fails "finished no NBD handshake in 1500 ms \(remote_connect_timeout\)" \
	"$FM" add "$T/mnt" "nbd+unix:///?socket=$T/nbd2.sock"
((SECONDS - t0 < 7)) || fail "add of a new remote leg waited $((SECONDS - t0)) s for a handshake"
(($(cat "$T/hang2.count") >= 2)) || fail "add did not get past the re-add probe"
v=$(fm_status_get "$T/mnt" .event_counts.Add); assert_eq "$v" 1 "Add events after the refused add"

fm_umount "$T/mnt"
nbd_kill
assert_legs_equal "$T/leg0" "$T/leg1" "$T/remote" >/dev/null
log "ok"

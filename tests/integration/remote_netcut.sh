#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# A remote leg behind a real network cut: nbdkit (file plugin) runs in a
# network namespace of its own, reached over a veth pair with TCP
# (nbd://10.213.X.2:10809/).  Mounted with remote_timeout=1500:
#   - the link goes down under I/O: the write completes on the local legs,
#     the remote leg is failed by the timeout (nothing answers, nothing
#     resets the connection), status says it reconnects;
#   - the link comes back: the leg reconnects by itself and is recovered
#     from the bitmap; no error reached the image's clients;
#   - after umount, the remote leg's data area equals the local legs'.
source "$(dirname "$0")/lib.sh"
cd "$T" || fail "cannot cd to $T"

command -v nbdkit >/dev/null || fail "nbdkit is not installed (.ci/deps installs it)"
command -v ip >/dev/null || fail "ip (iproute2) is not installed (.ci/deps installs it)"
X=$(($$ % 200 + 20))
NS=fmcut$$
VA=fmc${$}a
VB=fmc${$}b
HOST=10.213.$X.1
PEER=10.213.$X.2
URI="nbd://$PEER:10809/"
NBD_PID=

netcut_cleanup() {
	[[ -n $NBD_PID ]] && kill -KILL "$NBD_PID" 2>/dev/null
	ip link del "$VA" 2>/dev/null
	ip netns del "$NS" 2>/dev/null
	true
}
fm_on_cleanup netcut_cleanup

ip netns add "$NS"
ip link add "$VA" type veth peer name "$VB"
ip link set "$VB" netns "$NS"
ip addr add "$HOST/30" dev "$VA"
ip link set "$VA" up
ip netns exec "$NS" ip addr add "$PEER/30" dev "$VB"
ip netns exec "$NS" ip link set "$VB" up
ip netns exec "$NS" ip link set lo up

mkdir "$T/mnt"
truncate -s 32M "$T/leg0" "$T/leg1" "$T/remote"
ip netns exec "$NS" nbdkit -f --exit-with-parent -i "$PEER" -p 10809 file "$T/remote" \
	2>>"$T/nbdkit.log" &
NBD_PID=$!
for ((i = 0; i < 100; i++)); do
	timeout 1 bash -c "</dev/tcp/$PEER/10809" 2>/dev/null && break
	sleep 0.1
done
timeout 1 bash -c "</dev/tcp/$PEER/10809" 2>/dev/null ||
	fail "nbdkit does not listen on $PEER:10809: $(cat "$T/nbdkit.log")"

fm_create --region-size 1M "$T/leg0" "$T/leg1" "$URI"
fm_mount -o remote_timeout=1500,cache_mode=writethrough,sync_speed_min=200M \
	"$T/leg0" "$T/leg1" "$URI" "$T/mnt"
img=$T/mnt/image
dd if=/dev/urandom of="$img" bs=1M count=4 oflag=direct status=none || fail "first write"

log "cutting the link"
ip link set "$VA" down
t0=$SECONDS
dd if=/dev/urandom of="$img" bs=1M seek=8 count=1 oflag=direct conv=notrunc status=none ||
	fail "a write during the cut failed"
((SECONDS - t0 < 15)) || fail "a write waited $((SECONDS - t0)) s for a cut link"
log "the write completed in $((SECONDS - t0)) s"
fm_wait_leg_state "$T/mnt" "$URI" faulty 20
v=$(fm_leg_get "$T/mnt" "$URI" reconnecting); assert_eq "$v" true "status: reconnecting"
dd if=/dev/urandom of="$img" bs=1M seek=16 count=2 oflag=direct conv=notrunc status=none ||
	fail "a write while the leg is away failed"

log "restoring the link"
ip link set "$VA" up
fm_wait_leg_state "$T/mnt" "$URI" in_sync 60
fm_wait_sync_idle "$T/mnt" 30
v=$(fm_leg_get "$T/mnt" "$URI" reconnects); assert_eq "$v" 1 "status: reconnects"
v=$(fm_sync_get "$T/mnt" write_bytes)
((v > 0 && v < 32 * 1048576)) || fail "recovery copied $v bytes: not from the bitmap"
assert_eq "$(fm_io_errors "$T/mnt")" 0 "errors returned to the image's clients"

fm_umount "$T/mnt"
kill -KILL "$NBD_PID" 2>/dev/null
wait "$NBD_PID" 2>/dev/null || true
NBD_PID=
assert_legs_equal "$T/leg0" "$T/leg1" "$T/remote" >/dev/null
log "ok"

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Remote legs (NBD), with a real nbdkit (file plugin) on a unix socket:
#   - create with 2 local legs and nbd+unix:///?socket=..., examine the URI;
#   - mounted (writethrough, so that every write reaches the legs), a fio
#     verify runs while nbdkit is killed (SIGKILL) and started again: no
#     error reaches fio, the leg is faulty meanwhile (status: reconnecting),
#     reconnects by itself and is recovered from the bitmap, not wholly;
#     status shows the URI, the round trip and the reconnection;
#   - after umount (checked at the end), the remote leg's data area equals
#     the local legs';
#   - exactly the regions written while the server was gone are copied:
#     mounted again with a short bitmap_delay (every bit clear while all
#     legs are in sync), the server is killed, 4 regions are written (one
#     write straddles two), bitmap.set is 4; after the reconnection the
#     recovery wrote 4 regions (4 MiB, resynced_regions 4), and the legs
#     are equal after umount (so those 4 were the ones that differed);
#   - the reconnections are events LegReconnected of their own (status
#     event_counts; `monitor --json`: Fail, LegReconnected with slot 2 and
#     value 4 MiB, RebuildStarted, RebuildFinished; no Remove, no Add);
#   - 4k reads waiting for a slow leg (nbdkit's delay filter) do not hold
#     the event loops' request buffers: fio's 48 reads are all in flight.
# remote_hang.sh: a hung server, the administrator's fail and add.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/nbd_lib.sh"
cd "$T" || fail "cannot cd to $T"

# server_cut WRITES CHECK: kill nbdkit, run WRITES (the writes while the
# server is gone), wait until the remote leg is faulty, run CHECK (what
# must hold meanwhile); start nbdkit again and wait until the leg
# reconnected and its recovery ended.  Sets reconnects (the leg's), copied
# (sync.write_bytes) and resynced (sync.resynced_regions) from the status.
# (Not "cut": lib.sh runs the cut command.)
server_cut() {
	log "killing nbdkit"
	nbd_kill
	"$1"
	fm_wait_leg_state "$T/mnt" "$URI" faulty 20
	log "the remote leg is faulty"
	"$2"
	nbd_start
	log "nbdkit restarted"
	fm_wait_leg_state "$T/mnt" "$URI" in_sync 40
	fm_wait_sync_idle "$T/mnt" 30
	log "the remote leg is in sync again"
	fm_status_json "$T/mnt" >/dev/null
	read -r reconnects copied resynced < <(python3 - "$T/status.json" "$URI" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
leg = [l for l in j["legs"] if l["path"] == sys.argv[2]][0]
print(leg["reconnects"], j["sync"]["write_bytes"], j["sync"]["resynced_regions"])
PY
	) || fail "status after the reconnection: $(cat "$T/status.json")"
}

mkdir "$T/mnt"
truncate -s 64M "$T/leg0" "$T/leg1" "$T/remote"
nbd_start
fm_create --region-size 1M "$T/leg0" "$T/leg1" "$URI"
v=$(fm_examine_json "$URI" | python3 -c 'import json,sys; print(json.load(sys.stdin)["legs"][0]["leg_index"])')
assert_eq "$v" 2 "examine of the remote leg: its slot"

fm_mount -o bitmap_delay=60000,cache_mode=writethrough,sync_speed_min=200M,remote_retry_max=300 \
	"$T/leg0" "$T/leg1" "$URI" "$T/mnt"
img=$T/mnt/image
# Regions 0..7 written before the cut keep their bits (bitmap_delay): the
# recovery copies them and what was written during the cut, not all 63.
dd if=/dev/urandom of="$img" bs=1M count=8 oflag=direct status=none || fail "first write"
v=$(fm_leg_get "$T/mnt" "$URI" rtt_us); ((v > 0)) || fail "status: rtt_us is $v"

# fio verify in [16M, 24M), slowed down to span the cut.
fio --name=cut --filename="$img" --offset=16M --size=8M --rw=randwrite --bs=16k \
	--direct=1 --ioengine=psync --rate=4m --verify=crc32c --verify_fatal=1 \
	--output-format=json --output="$T/fio-cut.json" 2>"$T/fio-cut.err" &
FIO=$!
sleep 0.5
says_reconnecting() {
	fm_ok status "$T/mnt" | grep -q "remote: disconnected, reconnecting" ||
		fail "status text does not say the remote leg is reconnecting"
}
server_cut true says_reconnecting
wait "$FIO" || fail "fio verify failed across the cut: $(cat "$T/fio-cut.err")"
log "fio verify done"
assert_eq "$reconnects" 1 "status: reconnects"
assert_eq "$(fm_io_errors "$T/mnt")" 0 "errors returned to the image's clients"
for e in LegReconnected:1 Remove:0 Add:0; do
	assert_eq "$(fm_status_get "$T/mnt" ".event_counts.${e%:*}")" "${e#*:}" "events ${e%:*}"
done
log "recovery after the cut: $copied bytes"
((copied > 0 && copied <= 24 * 1048576)) || fail "recovery copied $copied bytes: not from the bitmap"
fm_ok status "$T/mnt" | grep -q "remote: connected, round trip .* ms, 1 reconnects" ||
	fail "status text lacks the remote line: $(cat "$T/fm.out")"
fm_ok status --format=prometheus "$T/mnt" >"$T/metrics.txt"
grep -q '^fusemirror_leg_reconnects_total{.*leg="2".*} 1$' "$T/metrics.txt" ||
	fail "metrics: no fusemirror_leg_reconnects_total 1 for leg 2: $(grep reconnects "$T/metrics.txt")"
grep -q '^fusemirror_leg_rtt_microseconds{.*leg="2".*} [1-9]' "$T/metrics.txt" ||
	fail "metrics: no round trip for leg 2: $(grep rtt "$T/metrics.txt")"

fm_umount "$T/mnt"
nbd_kill
# (the legs are compared once, at the end: a region the first recovery
# missed would still differ then, as the second copies only 4 others)

log "exact recovery: only the regions written while the server was gone"
nbd_start
fm_mount -o bitmap_delay=50,cache_mode=writethrough,sync_speed_min=200M,remote_retry_max=300 \
	"$T/leg0" "$T/leg1" "$URI" "$T/mnt"
fm_wait_status "$T/mnt" .bitmap.set 0 20
"$FM" monitor --json "$T/mnt" >"$T/events.out" 2>"$T/monitor.err" &
MON=$!
fm_wait_status "$T/mnt" .monitors 1 30
log "bitmap clear"
# Regions 10 and 11 (one write across their boundary), 30, 40: none that
# the first part wrote (0-7, 16-23), whose copies the final check covers.
cut_writes() {
	dd if=/dev/urandom of="$img" bs=4k seek=$((30 * 256 + 2)) count=1 oflag=direct \
		conv=notrunc status=none || fail "write during the cut (region 30)"
	dd if=/dev/urandom of="$img" bs=512k seek=21 count=2 oflag=direct conv=notrunc \
		status=none || fail "write during the cut (regions 10, 11)"
	dd if=/dev/urandom of="$img" bs=1M seek=40 count=1 oflag=direct conv=notrunc \
		status=none || fail "write during the cut (region 40)"
}
four_dirty() {
	assert_eq "$(fm_bitmap_get "$T/mnt" set)" 4 "bitmap regions set while the remote leg is gone"
}
server_cut cut_writes four_dirty
assert_eq "$reconnects" 1 "status: reconnects of the second mount"
assert_eq "$copied" $((4 << 20)) "bytes copied by the recovery"
assert_eq "$resynced" 4 "regions resynced by the recovery"
fm_umount "$T/mnt"
wait "$MON" || fail "monitor --json exited $?: $(cat "$T/monitor.err")"
python3 - "$T/events.out" "$URI" <<'PY' || fail "monitor --json: $(cat "$T/events.out")"
import json, sys
evs = [json.loads(l) for l in open(sys.argv[1])]
seen = [e for e in evs if e["event"] in
        ("Fail", "Remove", "Add", "LegReconnected", "RebuildStarted", "RebuildFinished")]
assert [e["event"] for e in seen] == \
    ["Fail", "LegReconnected", "RebuildStarted", "RebuildFinished"], [e["event"] for e in seen]
rc = seen[1]
assert rc["leg"]["slot"] == 2 and rc["leg"]["path"] == sys.argv[2], rc
assert rc["value"] == 4 << 20, rc
PY
nbd_kill
assert_legs_equal "$T/leg0" "$T/leg1" "$T/remote" >/dev/null

# 4k reads waiting for a slow leg do not keep the loops' request buffers
# (12 per loop): with nbdkit answering each read after 200 ms, fio's 48
# random reads in flight all reach the leg (its pending count), where
# the buffers let through at most 12 per loop.  On FUSE over io_uring a
# request waits in the kernel until an entry of its CPU's queue is free
# (32 per queue): fio runs on one CPU there, and every entry of that
# queue must reach the leg (the loops' 4 buffers on that transport let
# through 8).  Unpinned, fio's reads spread over the queues only as the
# scheduler moves it: CI saw all 48 on one queue once (32 in flight).
SLOW=$T/slow.sock
truncate -s 64M "$T/slow" "$T/local"
nbdkit -f --exit-with-parent -U "$SLOW" --filter=delay file "$T/slow" rdelay=200ms \
	2>>"$T/nbdkit.log" &
SLOW_PID=$!
fm_on_cleanup "kill -KILL $SLOW_PID 2>/dev/null || true"
for ((i = 0; i < 100; i++)); do [[ -S $SLOW ]] && break; sleep 0.1; done
[[ -S $SLOW ]] || fail "nbdkit with the delay filter did not start: $(cat "$T/nbdkit.log")"
SLOW_URI="nbd+unix:///?socket=$SLOW"
fm_create "$SLOW_URI" "$T/local"
fm_mount -o read_policy=first "$SLOW_URI" "$T/local" "$T/mnt"
# (written first: an unwritten region reads as zeroes without a leg read;
# 1 MiB writes go around the cache, so the reads below all miss)
dd if=/dev/urandom of="$T/mnt/image" bs=1M count=32 oflag=direct status=none ||
	fail "filling the image on the slow leg"
deep_want=41 pin=()
if [[ $FM_TRANSPORT == uring ]]; then
	deep_want=32 pin=(taskset -c 0)
fi
"${pin[@]}" fio --name=deep --filename="$T/mnt/image" --size=32M --rw=randread --bs=4k \
	--direct=1 --ioengine=io_uring --iodepth=48 --runtime=4 --time_based --norandommap \
	--output-format=json --output="$T/fio-deep.json" 2>"$T/fio-deep.err" &
FIO=$!
most=0
for ((i = 0; i < 12; i++)); do
	sleep 0.25
	v=$(fm_leg_get "$T/mnt" "$SLOW_URI" pending)
	((v > most)) && most=$v
done
wait "$FIO" || fail "fio at depth 48: $(cat "$T/fio-deep.err")"
log "reads in flight on the slow leg: at most $most"
((most >= deep_want)) ||
	fail "at most $most reads in flight on the slow leg (fio keeps 48; want $deep_want)"
fm_umount "$T/mnt"
log "ok"

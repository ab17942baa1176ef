#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# replace and add under load.  fio (randrw 4k..64k, crc32c verify,
# time-based, at most RUNTIME s) runs on the image all along, and is
# stopped once the add's rebuild has finished (so the load lasts as long
# as the rebuilds, however slow the machine); meanwhile:
#   - `fusemirror replace MNT leg1 new1` (new1: a new, empty sparse file):
#     status shows sync.action recover with sync.done growing (polled), then
#     idle; new1 is in_sync and leg1 is gone from the status;
#   - `fusemirror add MNT new2` (a third leg) likewise, ending with three
#     legs in_sync;
# both rebuilds start while fio runs (sync_speed_min = sync_speed_max =
# SPEED, so that a rebuild takes a few seconds and is neither starved by
# the load nor too quick to watch).  fio's verification passes, no error
# reaches it (io.errors 0), and after umount leg0, new1 and new2 are
# identical.
#
# Environment: FM_RA_SIZE (64M), FM_RA_RUNTIME (a bound on fio's seconds,
# 240, beyond what the rebuilds take: fio is stopped when the add is done),
# FM_RA_SPEED (16M: bytes/s of a rebuild).
source "$(dirname "$0")/lib.sh"
cd "$T" || fail "cannot cd to $T"

SIZE=${FM_RA_SIZE:-64M}
RUNTIME=${FM_RA_RUNTIME:-240}
SPEED=${FM_RA_SPEED:-16M}

mkdir "$T/mnt"
fm_create --size "$SIZE" --region-size 1M "$T/leg0" "$T/leg1"
legsize=$(stat -c %s "$T/leg0")
truncate -s "$legsize" "$T/new1" "$T/new2"
fm_mount -o "sync_speed_min=$SPEED,sync_speed_max=$SPEED" "$T/leg0" "$T/leg1" "$T/mnt"
img=$T/mnt/image

# Every region written first: a rebuild copies only the regions the
# written-region map has, and the few that fio's first second writes were
# copied before the first poll could see the rebuild running.
fio --name=fill --filename="$img" --rw=write --bs=1M --direct=1 --ioengine=psync \
	--size="$SIZE" >"$T/fio-fill.log" 2>&1 || fail "filling the image: $(cat "$T/fio-fill.log")"
v=$(fm_status_get "$T/mnt" .written.regions 2>/dev/null || true)
log "image filled (written regions: ${v:-?})"

log "fio load: randrw verify, until the add is done (at most ${RUNTIME}s)"
run_fio_bg load --filename="$img" --direct=1 --ioengine=io_uring --rw=randrw --bsrange=4k-64k \
	--iodepth=8 --verify=crc32c --verify_fatal=1 --do_verify=1 --time_based \
	--runtime="$RUNTIME" --size="$SIZE"
fio_pid=$FIO_PID
sleep 1
pid_alive "$fio_pid" || fail "fio stopped at once: $(cat "$T/fio-load.err")"

# watch_rebuild LEG WHAT: poll until LEG is in_sync and no sync runs;
# sync.action must have been seen as recover with sync.done growing.
watch_rebuild() {
	local leg=$1 what=$2 i line action sdone total state seen=0 grew=0 prev=-1
	for ((i = 0; i < 600; i++)); do
		line=$(fm_sync_progress "$T/mnt" "$leg") || fail "$what: cannot read the sync progress"
		read -r action sdone total state <<<"$line"
		if [[ $action == recover ]]; then
			seen=$((seen + 1))
			if ((prev >= 0 && sdone > prev)); then grew=$((grew + 1)); fi
			prev=$sdone
			if ((seen % 8 == 1)); then
				log "$what: recover $((sdone >> 20))/$((total >> 20)) MiB, leg $state"
			fi
		elif [[ $action == idle && $state == in_sync ]]; then
			break
		fi
		sleep 0.25
	done
	[[ $action == idle && $state == in_sync ]] ||
		fail "$what: not finished after 150 s (action $action, leg $state)"
	((seen > 0)) || fail "$what: sync.action was never 'recover' while rebuilding"
	((grew > 0)) || fail "$what: sync.done never grew during the rebuild ($seen samples)"
	log "$what: done ($seen samples of recover, done grew $grew times)"
}

log "replace leg1 with new1 under load"
fm_ok replace "$T/mnt" "$T/leg1" "$T/new1"
watch_rebuild "$T/new1" "replace"
v=$(fm_leg_state "$T/mnt" "$T/leg1");            assert_eq "$v" absent "the replaced leg in the status"
v=$(fm_leg_get "$T/mnt" "$T/leg0" state);        assert_eq "$v" in_sync "leg0 state"

pid_alive "$fio_pid" || fail "fio ended before the add started: $(cat "$T/fio-load.err")"
log "add new2 under load"
fm_ok add "$T/mnt" "$T/new2"
watch_rebuild "$T/new2" "add"
for l in leg0 new1 new2; do
	v=$(fm_leg_get "$T/mnt" "$T/$l" state);  assert_eq "$v" in_sync "$l state"
done
v=$(fm_array_degraded "$T/mnt");                 assert_eq "$v" false "array degraded"

log "stopping fio"
fio_stop load "$fio_pid"
v=$(fm_io_errors "$T/mnt");                      assert_eq "$v" 0 "errors returned to the client"
fm_umount "$T/mnt"
assert_legs_equal "$T/leg0" "$T/new1" "$T/new2" >/dev/null

# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Shared library of the integration tests (tests/integration/*.sh), sourced
# first thing by each of them.  A test runs the real daemon through FUSE as
# root, on legs in a private temporary directory, and drives it with the
# real CLI, fio, losetup, mkfs/fsck.
#
# Environment:
#   FUSEMIRROR           the binary under test (set by meson; required)
#   FM_TEST_TIMEOUT      seconds before the test's own watchdog stops it
#                        (default 300; meson's timeout is 60 s longer, the
#                        clean-up's worst case being under a minute)
#   FM_TEST_TMPDIR       where the private directory is made (default
#                        /var/tmp: a disk file system, for O_DIRECT legs)
#   FM_TEST_FOREGROUND=1 fm_mount runs the daemon with -f and keeps its log
#                        (printed when the test fails) instead of daemonizing
#   FM_TEST_KEEP=1       keep the private directory (legs, logs) on failure
#   FM_TRANSPORT=T       fm_mount and fm_mount_fg mount with --transport=T
#                        (auto, uring or dev) and check that `status`
#                        reports it (auto: anything); uring needs the fuse
#                        module's enable_uring parameter on (.ci/run sets
#                        it for the uring suite)
#
# Clean-up (trap on EXIT, INT and TERM, and a watchdog for hangs): every
# exit path ends the test's background jobs (writers, pollers), unmounts
# what the test mounted (file systems on loop devices first), detaches its loop devices, stops its fusemirror mounts (with
# `fusemirror umount`, then fusermount3 -u, then umount -l), stops its
# daemons (SIGTERM, then SIGKILL) and removes the private directory.  What
# the test did not register is found too: every mount under the private
# directory, every loop device backed by a file in it, every fusemirror
# process whose command line names it.  If a test that passed leaves work
# for the clean-up that needed force (a daemon that had to be killed, a lazy
# unmount), the test fails: that is a daemon that does not stop.  A daemon
# killed there leaves its control socket behind in /run/fusemirror: it is
# removed too.
#
# Conventions: `set -Eeuo pipefail`; any command that fails ends the test
# with the file, line and command; `fail MSG` ends it with MSG.  Exit 0 is a
# pass.  Tests never skip on this project's machines (root, /dev/fuse, loop
# devices, io_uring): a missing prerequisite is a failure.

set -Eeuo pipefail
shopt -s inherit_errexit
export LC_ALL=C

TEST_NAME=$(basename "${BASH_SOURCE[1]:-$0}" .sh)
_FM_MAIN_PID=$$

log() { printf '[%s %(%T)T] %s\n' "$TEST_NAME" -1 "$*"; }

# python3: the distribution's interpreter when there is one.  A version
# manager's shim first in PATH (pyenv on this project's machines) runs a
# chain of shell scripts per call: 0.3-2 s each against 0.02-0.2 s, and the
# tests call python3 hundreds of times.
if [[ -x /usr/bin/python3 ]]; then
	python3() { /usr/bin/python3 "$@"; }
fi

fail() {
	printf '%s: FAIL: %s\n' "$TEST_NAME" "$*" >&2
	exit 1
}

_fm_on_err() {
	local rc=$1 line=$2 src=$3 cmd=${4%%$'\n'*}

	printf '%s: FAIL: command failed (exit %s) at %s:%s: %s\n' \
		"$TEST_NAME" "$rc" "$(basename "$src")" "$line" "$cmd" >&2
	exit "$rc"
}
trap '_fm_on_err $? $LINENO "${BASH_SOURCE[0]}" "$BASH_COMMAND"' ERR

#----------------------------------------------------------------------
# Prerequisites: failures, not skips (see STYLE.md, Tests).

FM=${FUSEMIRROR:-}
[[ -n $FM ]] || fail "FUSEMIRROR is not set (run through meson: meson test --suite integration)"
[[ -x $FM ]] || fail "FUSEMIRROR=$FM is not an executable"
FM=$(realpath "$FM")
((EUID == 0)) || fail "integration tests need root (FUSE mounts, loop devices)"
[[ -c /dev/fuse ]] || fail "/dev/fuse is missing (modprobe fuse)"
for _t in fio losetup mkfs.ext4 e2fsck blkdiscard fusermount3 python3 sha256sum \
	timeout setsid findmnt truncate od dd cmp; do
	command -v "$_t" >/dev/null || fail "$_t is not installed (run .ci/deps)"
done
unset _t
FM_TRANSPORT=${FM_TRANSPORT:-}
case $FM_TRANSPORT in
"" | auto | dev) ;;
uring)
	[[ $(cat /sys/module/fuse/parameters/enable_uring 2>/dev/null) == Y ]] ||
		fail "FM_TRANSPORT=uring, but /sys/module/fuse/parameters/enable_uring is not Y" \
			"(as root: echo Y > /sys/module/fuse/parameters/enable_uring; .ci/run does)"
	;;
*) fail "FM_TRANSPORT=$FM_TRANSPORT: expected auto, uring or dev" ;;
esac

#----------------------------------------------------------------------
# Private directory and clean-up

T=$(mktemp -d "${FM_TEST_TMPDIR:-/var/tmp}/fusemirror-$TEST_NAME.XXXXXX")
T=$(realpath "$T")
export T

_FM_MOUNTS=()       # fusemirror mount points (directories or files)
_FS_MOUNTS=()       # other mounts (file systems on loop devices)
_LOOPS=()           # loop devices attached
_PIDS=()            # daemons started
_FM_WATCHDOG=
_FM_CLEANING=0
_FM_FORCED=()       # what the clean-up had to force

# Mount points under the private directory, deepest first (from
# /proc/self/mountinfo: no stat() through a possibly hung FUSE mount).
_fm_mounts_under_T() {
	awk -v t="$T/" 'index($5, t) == 1 { print length($5), $5 }' /proc/self/mountinfo |
		sort -rn | cut -d' ' -f2- | uniq
}

# is_mounted PATH: something is mounted exactly at PATH.
is_mounted() {
	awk -v p="$1" '$5 == p { f = 1 } END { exit !f }' /proc/self/mountinfo
}

# The file system type mounted at PATH (from mountinfo).
_fm_fstype() {
	awk -v p="$1" '$5 == p { for (i = 7; i <= NF; i++) if ($i == "-") { print $(i + 1); exit } }' \
		/proc/self/mountinfo | tail -n1
}

# pid_alive PID: running (a zombie counts as gone: the daemon's parent may
# be a PID 1 that does not reap).
pid_alive() {
	local st

	[[ -r /proc/$1/stat ]] || return 1
	st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
	[[ $st != Z && $st != X ]]
}

# wait_pid_gone PID SECONDS: 0 once PID is gone, 1 on timeout.
wait_pid_gone() {
	local pid=$1 i

	for ((i = 0; i < $2 * 10; i++)); do
		pid_alive "$pid" || return 0
		sleep 0.1
	done
	! pid_alive "$pid"
}

# fusemirror daemons whose command line names the private directory.
_fm_our_daemons() {
	local p args

	for p in /proc/[0-9]*; do
		[[ $p/exe -ef $FM ]] 2>/dev/null || continue
		mapfile -d '' args <"$p/cmdline" 2>/dev/null || continue
		[[ "${args[*]}" == *"$T/"* ]] || continue
		pid_alive "${p#/proc/}" && echo "${p#/proc/}"
	done
	return 0
}

_fm_forced() {
	_FM_FORCED+=("$*")
	printf '%s: cleanup: %s\n' "$TEST_NAME" "$*" >&2
}

# Stop one fusemirror mount however it takes.
_fm_stop_mount() {
	local mp=$1

	is_mounted "$mp" || return 0
	timeout -k 5 30 "$FM" umount "$mp" >/dev/null 2>&1 && ! is_mounted "$mp" && return 0
	is_mounted "$mp" || return 0
	_fm_forced "fusemirror umount $mp failed; fusermount3 -u"
	timeout -k 2 10 fusermount3 -u "$mp" 2>/dev/null && return 0
	is_mounted "$mp" || return 0
	_fm_forced "lazy unmount of $mp"
	umount -l "$mp" 2>/dev/null || true
}

_fm_cleanup() {
	local rc=${1:-$?} mp dev pid f

	((_FM_CLEANING)) && return 0
	_FM_CLEANING=1
	trap - ERR
	trap '' INT TERM
	set +eE
	cd / || true    # a test's working directory must not keep a mount busy
	_FM_RC=$rc	# the hooks' view of how the test ended
	for f in "${_FM_CLEANUP_HOOKS[@]}"; do eval "$f"; done
	[[ -n ${_FM_URING_UNLOCK:-} ]] && eval "$_FM_URING_UNLOCK"
	[[ -n $_FM_WATCHDOG ]] && kill "$_FM_WATCHDOG" 2>/dev/null
	if [[ -e $T/.watchdog-fired ]]; then
		printf '%s: FAIL: watchdog: the test ran longer than %ss (hang?)\n' \
			"$TEST_NAME" "${FM_TEST_TIMEOUT:-300}" >&2
		((rc == 0)) && rc=1
	fi
	if ((rc != 0)); then
		for f in "$T"/daemon*.log; do
			[[ -s $f ]] || continue
			printf -- '--- %s (last 60 lines) ---\n' "$(basename "$f")" >&2
			tail -n 60 "$f" >&2
		done
	fi

	# 0. The test's own background jobs that are not daemons (writers,
	# pollers): they could hold a mount busy or block forever.
	for pid in $(jobs -p); do
		[[ " ${_PIDS[*]} " == *" $pid "* ]] && continue
		kill -TERM "$pid" 2>/dev/null
	done

	# 1. File systems mounted under T that are not fusemirror (on loops).
	for mp in "${_FS_MOUNTS[@]}"; do
		is_mounted "$mp" || continue
		umount "$mp" 2>/dev/null || { _fm_forced "lazy unmount of $mp"; umount -l "$mp"; }
	done
	while read -r mp; do
		[[ -n $mp ]] || continue
		[[ $(_fm_fstype "$mp") == fuse* ]] && continue
		umount "$mp" 2>/dev/null || { _fm_forced "lazy unmount of $mp"; umount -l "$mp"; }
	done < <(_fm_mounts_under_T)

	# 2. Loop devices: ours, and any backed by a file under T.
	while read -r dev f; do
		[[ $f == "$T"/* ]] && _LOOPS+=("$dev")
	done < <(losetup -nl -O NAME,BACK-FILE 2>/dev/null)
	for dev in "${_LOOPS[@]}"; do
		losetup "$dev" >/dev/null 2>&1 || continue
		if _loop_limits_ok "$dev"; then
			losetup -d "$dev" 2>/dev/null || _fm_forced "cannot detach $dev"
		else
			_loop_discard "$dev"
		fi
	done

	# 3. fusemirror mounts: ours, then anything else under T.
	for ((i = ${#_FM_MOUNTS[@]} - 1; i >= 0; i--)); do
		_fm_stop_mount "${_FM_MOUNTS[i]}"
	done
	while read -r mp; do
		[[ -n $mp ]] && _fm_stop_mount "$mp"
	done < <(_fm_mounts_under_T)

	# 4. Daemons: a stopped mount ends its daemon; wait, then signals.
	mapfile -t -O "${#_PIDS[@]}" _PIDS < <(_fm_our_daemons)
	for pid in "${_PIDS[@]}"; do
		pid_alive "$pid" || continue
		wait_pid_gone "$pid" 15 && continue
		_fm_forced "daemon $pid still running: SIGTERM"
		kill -TERM "$pid" 2>/dev/null
		wait_pid_gone "$pid" 5 && continue
		_fm_forced "daemon $pid still running: SIGKILL"
		kill -KILL "$pid" 2>/dev/null
		wait_pid_gone "$pid" 10 || printf '%s: cleanup: pid %s survives SIGKILL\n' \
			"$TEST_NAME" "$pid" >&2
	done
	# A killed daemon leaves its mount dead (ENOTCONN): lazy-unmount it,
	# and its control socket (named after the mount point: src/ctl/path.c).
	while read -r mp; do
		[[ -n $mp ]] || continue
		_fm_forced "lazy unmount of $mp (left after its daemon)"
		umount -l "$mp" 2>/dev/null
	done < <(_fm_mounts_under_T)
	for mp in "${_FM_MOUNTS[@]}"; do
		f=/run/fusemirror/$(printf %s "$mp" | sha256sum | cut -c1-32).sock
		[[ -S $f ]] && ! is_mounted "$mp" && rm -f "$f"
	done

	# 5. The private directory (never across a mount that survived).
	if ((rc != 0)) && [[ ${FM_TEST_KEEP:-0} == 1 ]]; then
		printf '%s: kept %s\n' "$TEST_NAME" "$T" >&2
	else
		rm -rf --one-file-system "$T" 2>/dev/null ||
			printf '%s: cleanup: cannot remove %s\n' "$TEST_NAME" "$T" >&2
	fi
	if ((rc == 0 && ${#_FM_FORCED[@]} > 0)); then
		printf '%s: FAIL: the test passed but its clean-up needed force:\n' "$TEST_NAME" >&2
		printf '  %s\n' "${_FM_FORCED[@]}" >&2
		rc=1
	fi
	((rc == 0)) && printf '%s: PASS\n' "$TEST_NAME"
	exit "$rc"
}
# fm_on_cleanup CMD: run CMD (eval) first thing in the clean-up, on every
# exit path (e.g. restoring a kernel parameter the test changed), in the
# order registered; $_FM_RC is then the test's exit status (non-zero: it
# failed, and CMD may print what helps to tell why).
_FM_CLEANUP_HOOKS=()
fm_on_cleanup() { _FM_CLEANUP_HOOKS+=("$1"); }

# fm_uring_param_hold: take the fuse module's enable_uring parameter for the
# rest of the test.  meson runs tests in parallel, and a test that turns it
# off to check a refusal (transport.sh) must not meet one that turned it on
# to mount on io_uring (rss.sh).  Each such test calls this first, then
# saves the value and registers its restoring hook; the lock is released
# after that hook (its fd is inherited by the daemons, so it is unlocked
# explicitly rather than left to the shell's exit).
fm_uring_param_hold() {
	exec {_FM_URING_LOCK}>/run/fusemirror-enable-uring.lock
	flock "$_FM_URING_LOCK" || fail "cannot lock /run/fusemirror-enable-uring.lock"
	_FM_URING_UNLOCK="flock -u $_FM_URING_LOCK"
}

trap '_fm_cleanup' EXIT
trap '_fm_cleanup 130' INT
trap '_fm_cleanup 143' TERM

# Watchdog: a hung daemon must not hang the suite (nor leave it to meson's
# SIGKILL, which would skip the clean-up).  It kills the test's running
# command, then TERMs the test, whose trap cleans up.
_fm_start_watchdog() {
	local secs=${FM_TEST_TIMEOUT:-300}

	(
		trap - ERR EXIT
		set +e
		sleep "$secs" >/dev/null 2>&1 &
		sp=$!
		trap 'kill $sp 2>/dev/null; exit 0' TERM
		wait $sp || exit 0
		: >"$T/.watchdog-fired"
		printf '%s: watchdog: %ss elapsed, stopping the test\n' "$TEST_NAME" "$secs" >&2
		for c in $(ps -o pid= --ppid "$_FM_MAIN_PID"); do
			[[ $c == "$BASHPID" ]] || kill -TERM "$c" 2>/dev/null
		done
		kill -TERM "$_FM_MAIN_PID" 2>/dev/null
	) </dev/null &
	_FM_WATCHDOG=$!
}
_fm_start_watchdog

#----------------------------------------------------------------------
# Assertions

# assert_eq ACTUAL EXPECTED WHAT
assert_eq() {
	[[ $1 == "$2" ]] || fail "${3:-value}: got '$1', expected '$2'"
}

# assert_ne ACTUAL UNEXPECTED WHAT
assert_ne() {
	[[ $1 != "$2" ]] || fail "${3:-value}: got '$1', expected anything else"
}

# assert_exit CODE PATTERN CMD...: CMD exits with CODE and its stderr
# matches the extended regular expression PATTERN.  Its stdout and stderr
# are left in $T/last.out and $T/last.err.
assert_exit() {
	local want=$1 pat=$2 rc=0
	shift 2

	timeout -k 5 120 "$@" >"$T/last.out" 2>"$T/last.err" || rc=$?
	if [[ $rc != "$want" ]]; then
		fail "'$*' exited $rc, expected $want; stderr: $(head -c 2000 "$T/last.err")"
	fi
	grep -Eq -- "$pat" "$T/last.err" ||
		fail "'$*' (exit $rc): stderr does not match /$pat/: $(head -c 2000 "$T/last.err")"
}

# assert_fails PATTERN CMD...: CMD exits non-zero and stderr matches.
assert_fails() {
	local pat=$1 rc=0
	shift

	timeout -k 5 120 "$@" >"$T/last.out" 2>"$T/last.err" || rc=$?
	((rc != 0)) || fail "'$*' succeeded, expected a failure matching /$pat/"
	grep -Eq -- "$pat" "$T/last.err" ||
		fail "'$*' (exit $rc): stderr does not match /$pat/: $(head -c 2000 "$T/last.err")"
}

# assert_not_mounted PATH
assert_not_mounted() {
	! is_mounted "$1" || fail "$1 is mounted, expected not: $(grep -F " $1 " /proc/self/mountinfo)"
}

#----------------------------------------------------------------------
# Legs and their on-disk format (little-endian fields of the superblock)

sb_u64() { od -An -tu8 -j"$2" -N8 --endian=little "$1" | tr -d ' \n'; }
sb_u32() { od -An -tu4 -j"$2" -N4 --endian=little "$1" | tr -d ' \n'; }
image_size_of() { sb_u64 "$1" 80; }
data_offset_of() { sb_u64 "$1" 88; }

# The superblock as stored (read around the page cache: the daemon writes
# it with O_DIRECT while mounted).
sb_read_direct() { dd if="$1" bs=4096 count=1 iflag=direct status=none; }

# sb_clean LEG: 0 (shell true) when the CLEAN flag (bit 0 of the u32 at
# byte 120) is set on disk.
sb_clean() {
	local v
	v=$(sb_read_direct "$1" | od -An -tu4 -j120 -N4 --endian=little | tr -d ' \n')
	(((v & 1) == 1))
}

sb_events() { sb_read_direct "$1" | od -An -tu8 -j56 -N8 --endian=little | tr -d ' \n'; }

# sha256 of a whole file
leg_sum() { sha256sum "$1" | cut -d' ' -f1; }

# sha256 of a leg's data area [data_offset, data_offset + image_size)
data_sum() {
	local off size
	off=$(data_offset_of "$1")
	size=$(image_size_of "$1")
	[[ $off -gt 0 && $size -gt 0 ]] || fail "data_sum $1: no valid superblock"
	dd if="$1" bs=1M iflag=skip_bytes,count_bytes skip="$off" count="$size" status=none |
		sha256sum | cut -d' ' -f1
}

# sha256 of SIZE zero bytes
zero_sum() { head -c "$1" /dev/zero | sha256sum | cut -d' ' -f1; }

# leg_read LEG OFFSET LEN: LEN bytes of the image at OFFSET, as stored on
# LEG right now (O_DIRECT, so what the daemon wrote, not a stale cache).
# OFFSET and LEN need not be aligned: whole 4 KiB blocks are read, then cut.
leg_read() {
	local leg=$1 off=$2 len=$3 doff start end tmp=$T/.leg_read
	doff=$(data_offset_of "$leg")
	start=$(((doff + off) / 4096 * 4096))
	end=$(((doff + off + len + 4095) / 4096 * 4096))
	dd if="$leg" of="$tmp" bs=4096 iflag=direct skip=$((start / 4096)) \
		count=$(((end - start) / 4096)) status=none
	dd if="$tmp" bs=64k iflag=skip_bytes,count_bytes skip=$((doff + off - start)) \
		count="$len" status=none
	rm -f "$tmp"
}

# assert_legs_equal LEG...: the data areas are byte-identical; prints the sum.
assert_legs_equal() {
	local first s l
	first=$(data_sum "$1")
	for l in "${@:2}"; do
		s=$(data_sum "$l")
		[[ $s == "$first" ]] || fail "data areas differ: $1 ($first) vs $l ($s)"
	done
	echo "$first"
}

#----------------------------------------------------------------------
# The daemon

# fm CMD ARGS...: the binary under test.
fm() { "$FM" "$@"; }

# fm_create ARGS...: `fusemirror create`, which must succeed.
fm_create() {
	local rc=0
	"$FM" create "$@" >"$T/create.out" 2>"$T/create.err" || rc=$?
	((rc == 0)) || fail "fusemirror create $* exited $rc: $(cat "$T/create.err")"
	grep -q 'created array' "$T/create.out" || fail "fusemirror create $*: no 'created array' line"
}

# The pid a daemon reports in `status --json` for MOUNTPOINT.
fm_daemon_pid() {
	timeout -k 5 30 "$FM" status --json "$1" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["array"]["pid"])'
}

_fm_nlogs=0

# _fm_mount_args ARGS...: sets _FM_ARGS to ARGS with $FM_TEST_MOUNT_OPTS
# (e.g. event_loop=0: tests/meson.build runs variants with it) added to the
# first -o, or given as a -o of its own (a later -o replaces an earlier one).
_fm_mount_args() {
	local added=0
	_FM_ARGS=()
	while (($#)); do
		if [[ $1 == -o && $added == 0 && -n ${FM_TEST_MOUNT_OPTS:-} && $# -ge 2 ]]; then
			_FM_ARGS+=(-o "$2,$FM_TEST_MOUNT_OPTS")
			added=1
			shift 2
			continue
		fi
		_FM_ARGS+=("$1")
		shift
	done
	if [[ -n ${FM_TEST_MOUNT_OPTS:-} && $added == 0 ]]; then
		_FM_ARGS=(-o "$FM_TEST_MOUNT_OPTS" "${_FM_ARGS[@]}")
	fi
}

# fm_mount [OPTIONS] LEG... MOUNTPOINT: mount in daemon mode (the command
# returns once the mount is live) and register it.  Sets FM_PID to the
# daemon's pid.  With FM_TEST_FOREGROUND=1: runs -f in the background with
# a log in $T, and waits for the mount.
fm_mount() {
	local mp rc=0 i

	mp=$(realpath -m "${*: -1}")
	_FM_MOUNTS+=("$mp")
	if [[ ${FM_TEST_FOREGROUND:-0} == 1 ]]; then
		fm_mount_fg "$@"
		return 0
	fi
	_fm_mount_args "$@"
	timeout -k 5 120 "$FM" mount ${FM_TRANSPORT:+"--transport=$FM_TRANSPORT"} "${_FM_ARGS[@]}" \
		>"$T/mount.out" 2>"$T/mount.err" || rc=$?
	((rc == 0)) || fail "fusemirror mount $* exited $rc: $(cat "$T/mount.err")"
	is_mounted "$mp" || fail "fusemirror mount $* returned 0 but $mp is not mounted"
	FM_PID=$(fm_daemon_pid "$mp") || fail "status --json $mp failed after mount"
	pid_alive "$FM_PID" || fail "the daemon of $mp (pid $FM_PID) is not running"
	_PIDS+=("$FM_PID")
	_fm_check_transport "$mp"
}

# _fm_check_transport MOUNTPOINT: with FM_TRANSPORT uring or dev, the
# daemon serves MOUNTPOINT on that transport (and on io_uring, with a
# queue for every possible CPU).
_fm_check_transport() {
	local got want i
	[[ $FM_TRANSPORT == uring || $FM_TRANSPORT == dev ]] || return 0
	want="dev 0"
	[[ $FM_TRANSPORT == dev ]] ||
		want="uring $(($(sed -E 's/.*[-,]//' /sys/devices/system/cpu/possible) + 1))"
	# With -f the mount is visible a moment before the daemon publishes it.
	for ((i = 0; i < 50; i++)); do
		got=$(timeout -k 5 30 "$FM" status --json "$1" | python3 -c '
import json, sys
t = json.load(sys.stdin)["transport"]
print(t["name"], len(t["queues"]))') || fail "status --json $1: no transport"
		[[ $got == "$want" ]] && return 0
		sleep 0.1
	done
	assert_eq "$got" "$want" "transport (and io_uring queues) of $1"
}

# fm_mount_fg [OPTIONS] LEG... MOUNTPOINT: `fusemirror mount -f` in the
# background (its own child), stdout and stderr to $T/daemonN.log; waits
# for the mount.  Sets FM_PID (a child of this shell: `wait` works) and
# FM_LOG.  SIGINT and SIGTERM are reset to their defaults for the daemon
# (a non-interactive shell starts background jobs with SIGINT ignored, and
# libfuse leaves an ignored signal alone).
fm_mount_fg() {
	local mp i

	mp=$(realpath -m "${*: -1}")
	[[ " ${_FM_MOUNTS[*]} " == *" $mp "* ]] || _FM_MOUNTS+=("$mp")
	_fm_nlogs=$((_fm_nlogs + 1))
	FM_LOG=$T/daemon$_fm_nlogs.log
	_fm_mount_args "$@"
	env --default-signal=INT,TERM "$FM" mount -f ${FM_TRANSPORT:+"--transport=$FM_TRANSPORT"} \
		"${_FM_ARGS[@]}" >"$FM_LOG" 2>&1 &
	FM_PID=$!
	_PIDS+=("$FM_PID")
	for ((i = 0; i < 300; i++)); do
		if is_mounted "$mp"; then
			_fm_check_transport "$mp"
			return 0
		fi
		pid_alive "$FM_PID" || fail "fusemirror mount -f $* died before mounting: $(cat "$FM_LOG")"
		sleep 0.1
	done
	fail "fusemirror mount -f $*: not mounted after 30 s: $(cat "$FM_LOG")"
}

# fm_mount_standby SIZE: a new array of two legs without checksums,
# $T/leg0 and $T/leg1, of SIZE, mounted on $T/mnt, image $img; the test
# is skipped (77) unless it is served over /dev/fuse, whose event loops
# are the only ones with standby loops (standby_bursts.sh, standby_mem.sh).
fm_mount_standby() {
	mkdir "$T/mnt"
	fm_create --checksums=no --size "$1" "$T/leg0" "$T/leg1"
	fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
	img=$T/mnt/image
	if [[ $(fm_status_get "$T/mnt" .transport.name) != dev ]]; then
		echo "$TEST_NAME: SKIP: standby loops are /dev/fuse's"
		exit 77
	fi
}

# fm_umount MOUNTPOINT: `fusemirror umount`, which must succeed, unmount,
# and end the daemon (waited for).
fm_umount() {
	local mp pid rc=0
	mp=$(realpath -m "$1")
	pid=$(fm_daemon_pid "$mp") || fail "no daemon answers status for $mp before umount"
	timeout -k 5 120 "$FM" umount "$mp" >"$T/umount.out" 2>"$T/umount.err" || rc=$?
	((rc == 0)) || fail "fusemirror umount $mp exited $rc: $(cat "$T/umount.err")"
	! is_mounted "$mp" || fail "fusemirror umount $mp returned 0 but it is still mounted"
	wait_pid_gone "$pid" 30 || fail "daemon $pid of $mp still runs 30 s after umount"
}

#----------------------------------------------------------------------
# Loop devices and other mounts

# Where udev runs, let it finish probing a new or departing loop device.
_fm_udev_settle() {
	if command -v udevadm >/dev/null; then
		udevadm settle -t 10 2>/dev/null || true
	fi
}

# _loop_limits_ok DEV: DEV's discard limits are the ones its queue allows.
# A limit lowered through sysfs (a test that turns discard off) outlives the
# detach, holds for the device's next user and cannot be raised again
# (the kernel drops the discard granularity with it).
_loop_limits_ok() {
	local q=/sys/block/${1#/dev/}/queue l
	for l in discard_max_bytes write_zeroes_unmap_max_bytes; do
		[[ -e $q/$l && -e $q/${l/_max_bytes/_max_hw_bytes} ]] || continue
		[[ $(<"$q/$l") == "$(<"$q/${l/_max_bytes/_max_hw_bytes}")" ]] || return 1
	done
}

# _loop_discard DEV: detach DEV and delete the device (LOOP_CTL_REMOVE),
# so that the next losetup -f makes a fresh one with the default limits.
_loop_discard() {
	local i
	losetup -d "$1" 2>/dev/null || _fm_forced "cannot detach $1"
	for ((i = 0; i < 50; i++)); do
		python3 - "${1#/dev/loop}" <<'PY' 2>/dev/null && return 0
import fcntl, os, sys
fd = os.open("/dev/loop-control", os.O_RDWR)
fcntl.ioctl(fd, 0x4C81, int(sys.argv[1]))  # LOOP_CTL_REMOVE
PY
		sleep 0.1
	done
	echo "lib.sh: cannot delete $1: its lowered discard limits stay" >&2
}

# loop_attach [LOSETUP OPTIONS] FILE: attach, register, set LOOPDEV.
loop_attach() {
	local tries
	for ((tries = 0; ; tries++)); do
		LOOPDEV=$(losetup -f --show "$@") || fail "losetup -f --show $* failed"
		_loop_limits_ok "$LOOPDEV" || ((tries == 16)) && break
		# Left so by a test that was killed: take a fresh device.
		_loop_discard "$LOOPDEV"
	done
	_LOOPS+=("$LOOPDEV")
	_fm_udev_settle
}

# loop_detach DEV
loop_detach() {
	_fm_udev_settle
	if ! _loop_limits_ok "$1"; then
		_loop_discard "$1"
		return 0
	fi
	losetup -d "$1" || fail "losetup -d $1 failed"
	# losetup -d returns before the device lets go of its file when
	# someone (udev, blkid) still has it open: wait for that.
	local i
	for ((i = 0; i < 100; i++)); do
		losetup "$1" >/dev/null 2>&1 || return 0
		sleep 0.1
	done
	fail "loop device $1 still attached 10 s after losetup -d"
}

# fs_mount [MOUNT OPTIONS] DEV DIR: mount and register.
fs_mount() {
	local dir
	dir=$(realpath -m "${*: -1}")
	_FS_MOUNTS+=("$dir")
	mount "$@" || fail "mount $* failed"
}

#----------------------------------------------------------------------
# fio

# run_fio NAME FIO-ARGS...: run fio (one job called NAME, or the jobs the
# arguments name with --name=) with JSON output in $T/fio-NAME.json; fails
# unless fio exits 0 and reports no error.  With --verify, also that the verification read back at least what was written
# (so a verify that silently did nothing cannot pass).
run_fio() {
	local name=$1 rc=0 jobname=()
	shift
	# Several jobs when the arguments name them; otherwise one, NAME.
	[[ " $* " == *" --name="* ]] || jobname=(--name="$name")
	timeout -k 10 600 fio --output-format=json --output="$T/fio-$name.json" \
		"${jobname[@]}" "$@" 2>"$T/fio-$name.err" || rc=$?
	if ((rc != 0)); then
		cat "$T/fio-$name.err" >&2
		grep -v '^{' "$T/fio-$name.json" 2>/dev/null | head -n 40 >&2 || true
		fail "fio $name exited $rc"
	fi
	python3 - "$T/fio-$name.json" "$name" "$*" <<'PY' || fail "fio $name: bad result (see above)"
import json, sys
path, name, args = sys.argv[1:4]
text = open(path).read()
j = json.loads(text[text.index("{"):])
for job in j["jobs"]:
    r, w = job["read"]["io_bytes"], job["write"]["io_bytes"]
    print(f"fio {job['jobname']}: read {r >> 20} MiB ({job['read']['iops']:.0f} IOPS), "
          f"write {w >> 20} MiB ({job['write']['iops']:.0f} IOPS), error {job['error']}")
    if job["error"]:
        sys.exit(f"fio {name}: error {job['error']}")
    # --do_verify=0 (the last word wins in fio): a write-only run whose
    # verify headers a later --verify_only run checks.
    write_only = args.split().count("--do_verify=0") and \
        args.rfind("--do_verify=0") > args.rfind("--do_verify=1")
    if "--verify=" in args and "--verify_only" not in args and not write_only and \
            (w == 0 or r < w):
        sys.exit(f"fio {name}: wrote {w} bytes but read back only {r} to verify")
    if write_only and w == 0:
        sys.exit(f"fio {name}: a write-only run wrote nothing")
    if "--verify_only" in args and r == 0:
        sys.exit(f"fio {name}: verify_only read nothing")
PY
}

#----------------------------------------------------------------------
# Resilience (issue 5): reading status and examine, the administration
# verbs, crashes.  The tests read status and examine only through the
# accessors below, so that a renamed JSON key is a one-line fix here.
# A getter that is used as `v=$(getter ...)` fails the test (through the
# ERR trap) when the key is missing; never use one inside [[ ]] or a
# pipeline, where a failure would go unnoticed.

# _fm_json_get PATH: from the JSON object on stdin, print the value at PATH
# ('.a.b', '.legs[1].state'; '' is the whole object): strings bare, booleans
# as true/false, objects and arrays as JSON.  Exit 1 with a message naming
# the missing key.
_fm_json_get() {
	python3 -c '
import json, re, sys
path, what = sys.argv[1], sys.argv[2]
v = json.load(sys.stdin)
done = ""
for key, idx in re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]", path):
    if key:
        if not isinstance(v, dict) or key not in v:
            have = ", ".join(sorted(v)) if isinstance(v, dict) else type(v).__name__
            sys.exit(f"{what}: no key {done}.{key} (has: {have}); not implemented yet?")
        v = v[key]
        done += "." + key
    else:
        if not isinstance(v, list) or int(idx) >= len(v):
            sys.exit(f"{what}: no element {done}[{idx}]")
        v = v[int(idx)]
        done += f"[{idx}]"
if isinstance(v, bool):
    print("true" if v else "false")
elif isinstance(v, (dict, list)):
    print(json.dumps(v))
else:
    print(v)
' "$1" "$2"
}

# fm_ok ARGS...: `fusemirror ARGS...`, which must exit 0; its stdout is
# printed (and kept in $T/fm.out, stderr in $T/fm.err).
fm_ok() {
	local rc=0
	timeout -k 5 120 "$FM" "$@" >"$T/fm.out" 2>"$T/fm.err" || rc=$?
	((rc == 0)) || fail "fusemirror $* exited $rc: $(head -c 2000 "$T/fm.err")"
	cat "$T/fm.out"
}

# fm_status_json MOUNTPOINT: the status object (also left in $T/status.json).
fm_status_json() {
	local rc=0
	timeout -k 5 30 "$FM" status --json "$1" >"$T/status.json" 2>"$T/status.err" || rc=$?
	((rc == 0)) || fail "fusemirror status --json $1 exited $rc: $(cat "$T/status.err")"
	cat "$T/status.json"
}

# fm_status_get MOUNTPOINT PATH: one value of the status object.
fm_status_get() {
	fm_status_json "$1" >/dev/null
	_fm_json_get "$2" "status --json $1" <"$T/status.json"
}

# The keys the resilience tests read (see man/fusemirror.8, status).
fm_array_state()    { fm_status_get "$1" .array.state; }       # clean active degraded resyncing recovering failed
fm_array_degraded() { fm_status_get "$1" .array.degraded; }    # true/false
fm_array_failed()   { fm_status_get "$1" .array.failed; }      # true/false
fm_sync_action()    { fm_status_get "$1" .sync.action; }       # idle resync recover check repair
fm_sync_get()       { fm_status_get "$1" ".sync.$2"; }         # done total speed mismatches last_action resynced_regions ...
fm_bitmap_get()     { fm_status_get "$1" ".bitmap.$2"; }       # region_size regions set page_writes
fm_io_errors()      { fm_status_get "$1" .io.errors; }         # errors returned to the image's clients

# fm_leg_get MOUNTPOINT LEG KEY: KEY of the leg whose path is LEG (any
# path of the same file; state, corrected, read_errors, write_errors, ...);
# the test fails when no such leg is in the status.
fm_leg_get() {
	fm_status_json "$1" >/dev/null
	python3 - "$1" "$2" "$3" "$T/status.json" <<'PY'
import json, os, sys
mp, leg, key, path = sys.argv[1:5]
j = json.load(open(path))
want = os.path.realpath(leg)
for l in j.get("legs", []):
    if l.get("path") and os.path.realpath(l["path"]) == want:
        if key not in l:
            sys.exit(f"status --json {mp}: leg {leg} has no key {key} "
                     f"(has: {sorted(l)}); not implemented yet?")
        v = l[key]
        print(("true" if v else "false") if isinstance(v, bool) else
              json.dumps(v) if isinstance(v, (dict, list)) else v)
        sys.exit(0)
sys.exit(f"status --json {mp}: no leg {leg} (legs: {[l.get('path') for l in j.get('legs', [])]})")
PY
}

# fm_leg_state MOUNTPOINT LEG: in_sync faulty rebuilding removed, or
# "absent" when the status lists no leg at that path.
fm_leg_state() {
	fm_status_json "$1" >/dev/null
	python3 - "$2" "$T/status.json" <<'PY'
import json, os, sys
want = os.path.realpath(sys.argv[1])
for l in json.load(open(sys.argv[2])).get("legs", []):
    if l.get("path") and os.path.realpath(l["path"]) == want:
        print(l["state"])
        break
else:
    print("absent")
PY
}

# fm_sync_progress MOUNTPOINT LEG: "ACTION DONE TOTAL LEGSTATE" from one
# status call (sync.action, sync.done, sync.total in bytes, and LEG's state
# or "absent"), for polling a rebuild.
fm_sync_progress() {
	fm_status_json "$1" >/dev/null
	python3 - "$2" "$T/status.json" <<'PY'
import json, os, sys
j = json.load(open(sys.argv[2]))
s = j["sync"]
state = "absent"
for l in j.get("legs", []):
    if l.get("path") and os.path.realpath(l["path"]) == os.path.realpath(sys.argv[1]):
        state = l["state"]
print(s["action"], s["done"], s["total"], state)
PY
}

# fm_wait_for WHAT SECONDS CMD...: poll CMD (every 0.2 s) until it
# succeeds; on timeout fail with WHAT and the last status seen.
fm_wait_for() {
	local what=$1 secs=$2 i
	shift 2
	for ((i = 0; i < secs * 5; i++)); do
		"$@" && return 0
		sleep 0.2
	done
	fail "timed out after ${secs}s waiting for $what; last status: $(cat "$T/status.json" 2>/dev/null)"
}

# _fm_status_is MOUNTPOINT PATH VALUE: 0 when status PATH is VALUE (a
# missing key fails the test).
_fm_status_is() {
	local v
	v=$(fm_status_get "$1" "$2") || fail "status --json $1: cannot read $2"
	[[ $v == "$3" ]]
}

# fm_wait_status MOUNTPOINT PATH VALUE [SECONDS]
fm_wait_status() {
	fm_wait_for "status $2 == $3 on $1" "${4:-60}" _fm_status_is "$1" "$2" "$3"
}

# fm_wait_sync_idle MOUNTPOINT [SECONDS]: until no resync, recovery or
# scrub runs.
fm_wait_sync_idle() {
	fm_wait_status "$1" .sync.action idle "${2:-120}"
}

_fm_leg_state_is() {
	local v
	v=$(fm_leg_state "$1" "$2") || fail "status --json $1: cannot read the state of $2"
	[[ $v == "$3" ]]
}

# fm_wait_leg_state MOUNTPOINT LEG STATE [SECONDS]
fm_wait_leg_state() {
	fm_wait_for "leg $2 of $1 to be $3" "${4:-60}" _fm_leg_state_is "$1" "$2" "$3"
}

# fm_examine_json LEG...: `fusemirror examine --json` (offline), left in
# $T/examine.json and printed.
fm_examine_json() {
	local rc=0
	timeout -k 5 60 "$FM" examine --json "$@" >"$T/examine.json" 2>"$T/examine.err" || rc=$?
	((rc == 0)) || fail "fusemirror examine --json $* exited $rc: $(head -c 2000 "$T/examine.err")"
	cat "$T/examine.json"
}

# fm_examine_get LEG PATH: PATH within the leg's object (.events, .clean,
# .bitmap_set, .bitmap_regions, .table[1].state, ...).
fm_examine_get() {
	fm_examine_json "$1" >/dev/null
	_fm_json_get ".legs[0]$2" "examine --json $1" <"$T/examine.json"
}

# fm_examine_table_state LEG SLOT: the state that LEG's superblock records
# for the leg in SLOT of the leg table.
fm_examine_table_state() {
	fm_examine_json "$1" >/dev/null
	python3 - "$1" "$2" "$T/examine.json" <<'PY'
import json, sys
leg, slot = sys.argv[1], int(sys.argv[2])
l = json.load(open(sys.argv[3]))["legs"][0]
for s in l["table"]:
    if s["slot"] == slot:
        print(s["state"])
        sys.exit(0)
sys.exit(f"examine --json {leg}: no slot {slot} in the leg table: {l['table']}")
PY
}

# fm_bitmap_regions LEG...: the union of the regions whose bit is set in
# the legs' bitmaps (examine, offline), one a line, ascending.
fm_bitmap_regions() {
	fm_examine_json "$@" >/dev/null
	python3 - "$T/examine.json" <<'PY'
import json, sys
regions = set()
for l in json.load(open(sys.argv[1]))["legs"]:
    regions.update(l["bitmap_regions"])
for r in sorted(regions):
    print(r)
PY
}

# legs_differing_regions REGION_SIZE LEG0 LEG1: the regions (image offset /
# REGION_SIZE) where the two legs' data areas differ, one a line.  Run it
# only while no daemon drives the legs.
legs_differing_regions() {
	local oa ob size
	oa=$(data_offset_of "$2")
	ob=$(data_offset_of "$3")
	size=$(image_size_of "$2")
	# Fast path: cmp(1) is several times quicker than Python on equal legs.
	cmp -s -i "$oa:$ob" -n "$size" "$2" "$3" && return 0
	python3 - "$1" "$2" "$3" "$oa" "$ob" "$size" <<'PY'
import sys
rs, a, b, oa, ob, size = int(sys.argv[1]), sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
with open(a, "rb") as fa, open(b, "rb") as fb:
    fa.seek(oa)
    fb.seek(ob)
    for r in range((size + rs - 1) // rs):
        n = min(rs, size - r * rs)
        if fa.read(n) != fb.read(n):
            print(r)
PY
}

# fm_crash MOUNTPOINT: kill -9 the daemon serving MOUNTPOINT (the mount
# stays, dead: ENOTCONN) and wait until it is gone.  Sets FM_CRASHED_PID.
fm_crash() {
	local mp
	mp=$(realpath -m "$1")
	FM_CRASHED_PID=$(fm_daemon_pid "$mp") || fail "no daemon answers status for $mp"
	kill -KILL "$FM_CRASHED_PID"
	wait_pid_gone "$FM_CRASHED_PID" 20 || fail "daemon $FM_CRASHED_PID survives SIGKILL"
	wait "$FM_CRASHED_PID" 2>/dev/null || true  # our child with FM_TEST_FOREGROUND=1
}

# fm_drop_dead_mount MOUNTPOINT: unmount the dead FUSE mount a killed
# daemon left (lazily if something still holds it) and remove its control
# socket.
fm_drop_dead_mount() {
	local mp
	mp=$(realpath -m "$1")
	if is_mounted "$mp"; then
		umount "$mp" 2>/dev/null || umount -l "$mp" || fail "cannot unmount the dead mount $mp"
	fi
	rm -f "/run/fusemirror/$(printf %s "$mp" | sha256sum | cut -c1-32).sock"
}

# fm_crashwriter ARGS...: tests/helpers/fm_crashwriter (FM_CRASHWRITER, set
# by meson; made absolute here, as tests change directory).  To run it in
# the background, start "$(fm_crashwriter_bin)" itself, not this function:
# the job is then the writer, which `kill` and the clean-up reach.
[[ -n ${FM_CRASHWRITER:-} ]] && FM_CRASHWRITER=$(realpath "$FM_CRASHWRITER")
fm_crashwriter_bin() {
	[[ -x ${FM_CRASHWRITER:-} ]] ||
		fail "FM_CRASHWRITER is not set to the fm_crashwriter helper (run through meson)"
	echo "$FM_CRASHWRITER"
}
fm_crashwriter() {
	local bin
	bin=$(fm_crashwriter_bin)
	"$bin" "$@"
}

# run_fio_bg NAME FIO-ARGS...: start fio as a background job of the test
# itself (so that the clean-up's first step stops it; a `run_fio ... &`
# would leave fio running when its subshell is killed), JSON output in
# $T/fio-NAME.json.  Sets FIO_PID.  fio_wait NAME PID: wait for it, then
# the checks of run_fio.
run_fio_bg() {
	local name=$1 jobname=()
	shift
	[[ " $* " == *" --name="* ]] || jobname=(--name="$name")
	printf '%s\n' "$*" >"$T/fio-$name.args"
	fio --output-format=json --output="$T/fio-$name.json" "${jobname[@]}" "$@" \
		2>"$T/fio-$name.err" &
	FIO_PID=$!
}

fio_wait() {
	local name=$1 rc=0
	wait "$2" || rc=$?
	_fio_check "$name" "$rc" 0
}

# fio_stop NAME PID: end a time-based fio of run_fio_bg before its runtime
# (SIGINT: fio stops its jobs and writes its JSON result, exiting 128 or
# 0) and check it as fio_wait does.  For a load that must last until the
# test says, whatever the machine's speed: give it a runtime far longer
# than needed and stop it.
fio_stop() {
	local name=$1 rc=0
	pid_alive "$2" || fail "fio $name ended before it was stopped: $(cat "$T/fio-$name.err")"
	kill -INT "$2" 2>/dev/null || true
	wait "$2" || rc=$?
	_fio_check "$name" "$rc" 128
}

# _fio_check NAME RC ALSO_OK: fio's exit status RC (0, or ALSO_OK) and its
# JSON result: no job error, and a verifying job read back what it wrote.
_fio_check() {
	local name=$1 rc=$2
	if ((rc != 0 && rc != $3)); then
		cat "$T/fio-$name.err" >&2
		grep -v '^{' "$T/fio-$name.json" 2>/dev/null | head -n 40 >&2 || true
		fail "fio $name exited $rc"
	fi
	python3 - "$T/fio-$name.json" "$name" "$(cat "$T/fio-$name.args")" <<'PY' || fail "fio $name: bad result (see above)"
import json, sys
path, name, args = sys.argv[1:4]
text = open(path).read()
j = json.loads(text[text.index("{"):])
for job in j["jobs"]:
    r, w = job["read"]["io_bytes"], job["write"]["io_bytes"]
    print(f"fio {job['jobname']}: read {r >> 20} MiB ({job['read']['iops']:.0f} IOPS), "
          f"write {w >> 20} MiB ({job['write']['iops']:.0f} IOPS), error {job['error']}")
    if job["error"]:
        sys.exit(f"fio {name}: error {job['error']}")
    if "--verify=" in args and "--verify_only" not in args and (w == 0 or r < w):
        sys.exit(f"fio {name}: wrote {w} bytes but read back only {r} to verify")
PY
}

# sleep_ms_between MIN MAX: sleep a random time in [MIN, MAX] ms.
sleep_ms_between() {
	local ms=$(($1 + RANDOM % ($2 - $1 + 1)))
	sleep "$((ms / 1000)).$(printf %03d $((ms % 1000)))"
}

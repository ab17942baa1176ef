# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# NBD servers for the remote-leg tests (remote_legs.sh, remote_hang.sh),
# sourced after lib.sh: nbdkit's file plugin serving $T/remote on the unix
# socket $SOCK (URI $URI), in the foreground of the test, killed (-9) by the
# clean-up on every exit path; when the test failed, the clean-up first
# prints whether it still ran and its log (nbd_report).

command -v nbdkit >/dev/null || fail "nbdkit is not installed (.ci/deps installs it)"
SOCK=$T/nbd.sock
URI="nbd+unix:///?socket=$SOCK"
NBD_PID=

# nbd_start: serve $T/remote (again); returns once the socket exists.
nbd_start() {
	local i
	rm -f "$SOCK"
	nbdkit -f --exit-with-parent -U "$SOCK" file "$T/remote" 2>>"$T/nbdkit.log" &
	NBD_PID=$!
	for ((i = 0; i < 100; i++)); do
		[[ -S $SOCK ]] && return 0
		sleep 0.1
	done
	fail "nbdkit did not start: $(cat "$T/nbdkit.log")"
}

# nbd_after_client_kill: a client was killed (-9) with requests in flight;
# the server must still serve.  nbdkit 1.32 (Debian 12) can abort then,
# on "raw_send_socket: Assertion `sock >= 0' failed" after a reply hit the
# closed socket: a bug of that server, which a deployment's service
# manager would restart.  That one abort is logged and the server started
# again; any other end of it fails the test.
nbd_after_client_kill() {
	local n
	sleep 0.2	# the abort follows the reply that fails
	kill -0 "$NBD_PID" 2>/dev/null && return 0
	wait "$NBD_PID" 2>/dev/null || true
	n=$(grep -c "raw_send_socket: Assertion .sock >= 0' failed" "$T/nbdkit.log" || true)
	((n > ${NBD_KNOWN_ABORTS:-0})) ||
		fail "nbdkit (pid $NBD_PID) ended when its client was killed: $(tail -n 5 "$T/nbdkit.log")"
	NBD_KNOWN_ABORTS=$n
	log "nbdkit aborted on a reply to the killed client (its raw_send_socket assertion, an nbdkit bug); started again"
	nbd_start
}

# nbd_pause: SIGSTOP the server, and wait until every thread of it is
# stopped (kill returns before: a running thread could still answer).
nbd_pause() {
	local i t all
	kill -STOP "$NBD_PID"
	for ((i = 0; i < 200; i++)); do
		all=1
		for t in /proc/"$NBD_PID"/task/*/stat; do
			[[ $(sed 's/.*) //' "$t" 2>/dev/null | cut -c1) == [Tt] ]] || all=0
		done
		((all)) && return 0
		sleep 0.05
	done
	fail "nbdkit (pid $NBD_PID) did not stop"
}

# nbd_report: after a failed test, whether the server was still running
# (a mount refused with "Connection refused" means nobody listened), how
# it ended if not, and its log: the test's directory goes with the
# clean-up.
nbd_report() {
	local st
	((${_FM_RC:-0} != 0)) || return 0
	if [[ -n $NBD_PID ]]; then
		if kill -0 "$NBD_PID" 2>/dev/null; then
			printf '%s: nbdkit (pid %s) was still running\n' "$TEST_NAME" "$NBD_PID" >&2
		else
			wait "$NBD_PID" 2>/dev/null
			st=$?
			printf '%s: nbdkit (pid %s) had exited: status %s%s\n' "$TEST_NAME" \
				"$NBD_PID" "$st" "$( ((st > 128)) && printf ' (signal %s)' "$(kill -l $((st - 128)))")" >&2
			NBD_PID=
		fi
	fi
	if [[ -s $T/nbdkit.log ]]; then
		printf -- '--- nbdkit.log (last 40 lines) ---\n' >&2
		tail -n 40 "$T/nbdkit.log" >&2
	fi
}
fm_on_cleanup nbd_report

# nbd_kill: the server dies (SIGKILL; a stopped one is continued first).
nbd_kill() {
	[[ -n $NBD_PID ]] || return 0
	kill -CONT "$NBD_PID" 2>/dev/null || true
	kill -KILL "$NBD_PID" 2>/dev/null || true
	wait "$NBD_PID" 2>/dev/null || true
	NBD_PID=
}
fm_on_cleanup nbd_kill

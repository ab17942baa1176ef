#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# The bash completion (completion/fusemirror), driven as bash drives it
# (COMP_WORDS, COMP_CWORD, then the function `complete -p` names), once
# on its own and once with bash-completion's library loaded:
#   - `complete -p fusemirror` names _fusemirror;
#   - verbs (from `fusemirror --help`, monitor included), a verb's options
#     (from its --help: --log-level ...), option values (--log-level,
#     --log-target, --format, -o's keys, --config's files);
#   - mount points: the fusemirror mounts of mountinfo (a mounted array,
#     not / or /proc), for status, umount, fail, ...;
#   - legs: the mounted array's legs for fail/remove/inject, files for
#     create/add.
source "$(dirname "$0")/lib.sh"
COMPLETION=$(realpath "$(dirname "$0")/../../completion/fusemirror")
cd "$T" || fail "cannot cd to $T"

mkdir "$T/mnt"
fm_create --size 16M "$T/leg0" "$T/leg1"
fm_mount "$T/leg0" "$T/leg1" "$T/mnt"
touch "$T/spare.img"

# run_cases: every check, in the current shell (the completion loaded).
run_cases() {
	local out
	out=$(complete -p fusemirror) || fail "complete -p fusemirror: nothing registered"
	[[ $out == *"-F _fusemirror fusemirror"* ]] || fail "complete -p fusemirror: $out"

	expect "verbs" has "$FM ''" create mount status umount fail remove add replace scrub \
		inject examine monitor write-mostly --help --version
	expect "verb prefix" only "$FM st" status
	expect "mount options" has "$FM mount --log" --log-level --log-target --log-file
	expect "mount options" has "$FM mount -" --foreground --config --options -o -f
	expect "status options" has "$FM status --f" --format
	expect "monitor options" has "$FM monitor -" --program --json --oneshot -1
	expect "--log-level values" only "$FM mount --log-level ''" error warning notice info debug
	expect "--log-target values" only "$FM mount --log-target j" journal
	expect "--format values" only "$FM status --format p" prometheus
	expect "-o keys" has "$FM mount -o cache_" cache_mode= cache_size=
	expect "-o after a comma" has "$FM mount -o ro,cache_m" ro,cache_mode=
	expect "--config files" has "$FM mount --config $T/le" "$T/leg0" "$T/leg1"
	# (Other fusemirror mounts of the machine may be offered too.)
	expect "mount points" has "$FM status ''" "$T/mnt"
	expect "mount points" has "$FM umount ''" "$T/mnt"
	lacks "not a fusemirror mount" "$FM status ''" / /proc /sys "$T"
	expect "mount points, prefix" only "$FM fail $T/m" "$T/mnt"
	expect "legs of the array" only "$FM fail $T/mnt ''" "$T/leg0" "$T/leg1"
	expect "legs of the array" only "$FM inject --read $T/mnt $T/leg1" "$T/leg1"
	expect "write-mostly on|off" only "$FM write-mostly $T/mnt $T/leg1 ''" on off
	expect "new legs are files" has "$FM add $T/mnt $T/sp" "$T/spare.img"
	expect "create legs are files" has "$FM create $T/le" "$T/leg0" "$T/leg1"
}

# expect WHAT has|only "WORDS" EXPECTED...: complete the last of WORDS
# ('' for an empty word); `has`: every EXPECTED is offered; `only`: the
# offers are exactly EXPECTED.
expect() {
	local what=$1 mode=$2 line=$3 got w
	shift 3
	eval "COMP_WORDS=($line)"
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMP_LINE="${COMP_WORDS[*]}"
	COMP_POINT=${#COMP_LINE}
	COMPREPLY=()
	_fusemirror fusemirror "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
	got=$(printf '%s\n' "${COMPREPLY[@]}" | sort -u)
	for w in "$@"; do
		grep -qxF -- "$w" <<<"$got" ||
			fail "$what: '$line' does not offer '$w'; offers: $(echo $got)"
	done
	if [[ $mode == only ]]; then
		[[ $(grep -c . <<<"$got") == "$#" ]] ||
			fail "$what: '$line' offers more than '$*': $(echo $got)"
	fi
}

# lacks WHAT "WORDS" UNEXPECTED...: none of UNEXPECTED is offered.
lacks() {
	local what=$1 line=$2 w
	shift 2
	eval "COMP_WORDS=($line)"
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMPREPLY=()
	_fusemirror fusemirror "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
	for w in "$@"; do
		for o in "${COMPREPLY[@]}"; do
			[[ $o != "$w" ]] || fail "$what: '$line' offers '$w'"
		done
	done
}

log "the completion alone"
# shellcheck source=/dev/null
source "$COMPLETION"
run_cases

log "with bash-completion's library"
BC=/usr/share/bash-completion/bash_completion
[[ -r $BC ]] || fail "$BC is missing (bash-completion is in .ci/deps)"
(
	set +eu
	# shellcheck source=/dev/null
	source "$BC"
	set -eu
	# shellcheck source=/dev/null
	source "$COMPLETION"
	run_cases
)
fm_umount "$T/mnt"
log "ok"

#!/usr/bin/env bash
# Build the libFuzzer targets and run each for a while on a copy of its
# seed corpus (tests/fuzz/corpus/NAME/, which also holds the regression
# inputs of every bug found: libFuzzer runs them all first; the config
# target also gets conf/fusemirror.conf as it is).
#
# Usage: tests/fuzz/run.sh [--build DIR | --bindir DIR] [--time SECONDS]
#                          [--keep DIR] [TARGET...]
#   --build DIR   configure/build DIR with CC=clang -Dfuzz=true (default:
#                 build-fuzz at the top of the tree)
#   --bindir DIR  use fuzz_* programs already built in DIR (meson test)
#   --time N      seconds per target (default 60)
#   --keep DIR    keep each target's grown corpus in DIR/NAME (default:
#                 thrown away)
#   TARGET        superblock bitmap config ctl_request ctl_reply cli_reply
#                 (default: all, one after the other)
# Extra libFuzzer flags: FUZZ_FLAGS="-jobs=2 ...".  Exit status: 0 when
# every target ran its time without a crash, leak or sanitizer report;
# 1 otherwise (the input that failed is named: add it to the corpus as a
# regression input once the bug is fixed).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
all=(superblock bitmap config ctl_request ctl_reply cli_reply)
build="$top/build-fuzz" bindir="" secs=60 keep=""
targets=()
while (($#)); do
	case $1 in
	--build) build=$2; shift 2 ;;
	--bindir) bindir=$2; shift 2 ;;
	--time) secs=$2; shift 2 ;;
	--keep) keep=$2; shift 2 ;;
	-h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	-*) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
	*) targets+=("$1"); shift ;;
	esac
done
((${#targets[@]})) || targets=("${all[@]}")
[[ $secs =~ ^[0-9]+$ && $secs -gt 0 ]] || { echo "run.sh: --time $secs: not a number of seconds" >&2; exit 2; }

if [[ -z $bindir ]]; then
	if [[ ! -f $build/build.ninja ]]; then
		CC=clang meson setup "$build" "$top" -Dfuzz=true -Dtests=false >/dev/null ||
			{ echo "run.sh: meson setup $build failed" >&2; exit 1; }
	fi
	ninja -C "$build" >/dev/null || { echo "run.sh: build of $build failed" >&2; exit 1; }
	bindir=$build/tests/fuzz
fi

work=$(mktemp -d /tmp/fm-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
status=0
for t in "${targets[@]}"; do
	exe=$bindir/fuzz_$t seeds=$here/corpus/$t
	if [[ ! -x $exe ]]; then
		echo "run.sh: no fuzz target $t ($exe)" >&2
		status=1; continue
	fi
	if [[ ! -d $seeds ]] || ! compgen -G "$seeds/*" >/dev/null; then
		echo "run.sh: $t: no seed corpus in $seeds" >&2
		status=1; continue
	fi
	grown=$work/$t
	[[ -n $keep ]] && grown=$keep/$t
	mkdir -p "$grown" "$work/artifacts-$t"
	# The config parser's seeds also take the example file as it is now
	# (conf/fusemirror.conf: every key, documented), not a copy that
	# falls behind it.
	extra=()
	if [[ $t == config ]]; then
		mkdir -p "$work/seeds-$t"
		cp "$top/conf/fusemirror.conf" "$work/seeds-$t/example.conf"
		extra=("$work/seeds-$t")
	fi
	start=$(date +%s)
	# The grown corpus comes first: libFuzzer writes new inputs there,
	# never into the seeds in the source tree.
	# shellcheck disable=SC2086
	"$exe" -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 -error_exitcode=3 -timeout_exitcode=4 -print_final_stats=1 \
		-artifact_prefix="$work/artifacts-$t/" ${FUZZ_FLAGS:-} "$grown" "$seeds" "${extra[@]}" \
		>"$work/$t.log" 2>&1
	rc=$?
	took=$(($(date +%s) - start))
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -1)
	if ((rc == 0)); then
		echo "fuzz $t: ${took} s, ${runs:-?} inputs, $(find "$grown" -type f | wc -l) in the grown corpus, no crash"
	else
		status=1
		tail -60 "$work/$t.log"
		for a in "$work/artifacts-$t"/*; do
			[[ -f $a ]] || continue
			mkdir -p "$top/fuzz-failures"
			cp "$a" "$top/fuzz-failures/$t-$(basename "$a")"
			echo "fuzz $t: failing input saved as fuzz-failures/$t-$(basename "$a")"
		done
		echo "fuzz $t: FAILED after ${took} s (exit $rc)"
	fi
done
exit $status

#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# dmio-bench.sh: fio against dmio on the same files, in one run, one table.
# See bench/README.md for what each job measures and how to read the ratios.
#
# Exit status: 0 when every run produced a number, whether or not a target
# was met (a missed target is marked in the table, never an error);
# 1 when some run failed (its cell says FAIL; the logs are in --out);
# 2 for bad usage or a setup failure (no space, no binary, no O_DIRECT).

set -uo pipefail	# not -e: a failed run is reported in the table

prog=dmio-bench.sh
script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src_root=$(dirname "$script_dir")

dir=""
runtime=10
ramp=1
size=4G
bs=4k
qd_high=32
repeat=1
jobs_wanted="1,2,3,4,5"
bin=""
build_dir="$src_root/build-bench"
out=""
keep=0

usage() {
	cat <<EOF
Usage: $prog [OPTIONS]

Runs fio (ioengine=io_uring, direct=1) and dmio-bench (the asynchronous
dmio API) on the same two preallocated files and prints one table:
  1 randread QD1   2 randread QD32   3 randwrite QD1   4 randwrite QD32
  5 randwrite QD32 to 2 files (dmio: one write to 2 regions; fio: 2 jobs)

Options:
  --dir DIR         where the two files live (default: a new temp dir under
                    /var/tmp, removed afterwards); /dev/shm for tmpfs
  --runtime SEC     measured seconds per run (default $runtime)
  --ramp SEC        unmeasured seconds before each run (default $ramp)
  --size SIZE       size of each file, fio syntax (default $size)
  --bs SIZE         block size (default $bs)
  --qd N            the deep queue depth (default $qd_high)
  --repeat N        run every measurement N times, report the median
                    (default $repeat; fio and dmio alternate who goes first)
  --jobs LIST       comma-separated subset of 1,2,3,4,5 (default: all)
  --bin PATH        dmio-bench binary (default: build it in --build-dir)
  --build-dir DIR   meson build dir for dmio-bench (default: build-bench)
  --out DIR         raw fio JSON and dmio-bench logs (default:
                    bench/out/DATE-TIME)
  --keep            keep the files (and reuse them when run again with
                    the same --dir and --size)
  -h, --help        this text
EOF
}

die() {
	echo "$prog: $*" >&2
	exit 2
}

while [[ $# -gt 0 ]]; do
	case "$1" in
	--dir) dir=${2:?}; shift ;;
	--runtime) runtime=${2:?}; shift ;;
	--ramp) ramp=${2:?}; shift ;;
	--size) size=${2:?}; shift ;;
	--bs) bs=${2:?}; shift ;;
	--qd) qd_high=${2:?}; shift ;;
	--repeat) repeat=${2:?}; shift ;;
	--jobs) jobs_wanted=${2:?}; shift ;;
	--bin) bin=${2:?}; shift ;;
	--build-dir) build_dir=${2:?}; shift ;;
	--out) out=${2:?}; shift ;;
	--keep) keep=1 ;;
	-h|--help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
	shift
done

[[ $runtime =~ ^[1-9][0-9]*$ ]] || die "--runtime $runtime: whole seconds >= 1"
[[ $ramp =~ ^[0-9]+$ ]] || die "--ramp $ramp: whole seconds"
[[ $qd_high =~ ^[1-9][0-9]*$ ]] || die "--qd $qd_high: a positive integer"
[[ $repeat =~ ^[1-9][0-9]*$ ]] || die "--repeat $repeat: a positive integer"
[[ $jobs_wanted =~ ^[1-5](,[1-5])*$ ]] || die "--jobs $jobs_wanted: e.g. 1,2,5"

to_bytes() {	# 4k, 4K, 4KiB, 4G, 4096 -> bytes (binary units, like fio)
	local v=${1%[bB]}
	v=${v%[iI]}
	case "$v" in
	*[kK]) echo $(( ${v%?} << 10 )) ;;
	*[mM]) echo $(( ${v%?} << 20 )) ;;
	*[gG]) echo $(( ${v%?} << 30 )) ;;
	*[tT]) echo $(( ${v%?} << 40 )) ;;
	*) echo $(( v )) ;;
	esac
}
size_bytes=$(to_bytes "$size" 2>/dev/null) || die "--size $size: not a size"
bs_bytes=$(to_bytes "$bs" 2>/dev/null) || die "--bs $bs: not a size"
(( bs_bytes >= 512 && bs_bytes % 512 == 0 )) || die "--bs $bs: a multiple of 512"
(( size_bytes >= bs_bytes && size_bytes % bs_bytes == 0 )) ||
	die "--size $size: a multiple of --bs"

want() { [[ ",$jobs_wanted," == *",$1,"* ]]; }

#----------------------------------------------------------------
# Tools

if ! command -v fio >/dev/null 2>&1; then
	echo "$prog: fio is missing: apt-get install -y fio" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q fio </dev/null >&2 ||
		{ apt-get update -q </dev/null >&2 && apt-get install -y -q fio </dev/null >&2; }
fi
have_fio=0
command -v fio >/dev/null 2>&1 && have_fio=1
((have_fio)) || echo "$prog: WARNING: no fio: its columns will say n/a" >&2

# Debian 12 ships python3 by default; jq is the fallback.
if [[ -x /usr/bin/python3 ]]; then
	py=/usr/bin/python3
elif command -v python3 >/dev/null 2>&1; then
	py=$(command -v python3)
else
	py=""
	command -v jq >/dev/null 2>&1 || die "need python3 or jq to read fio's JSON"
fi

if [[ -z $bin ]]; then
	bin="$build_dir/bench/dmio-bench"
	if [[ ! -f $build_dir/build.ninja ]]; then
		echo "$prog: configuring $build_dir" >&2
		meson setup "$build_dir" "$src_root" -Dtests=false >&2 ||
			die "meson setup $build_dir failed"
	fi
	ninja -C "$build_dir" bench/dmio-bench >&2 || die "building dmio-bench failed"
fi
[[ -x $bin ]] || die "$bin: not an executable (see --bin)"

#----------------------------------------------------------------
# Files

made_dir=0
if [[ -z $dir ]]; then
	dir=$(mktemp -d /var/tmp/dmio-bench.XXXXXX) || die "mktemp under /var/tmp failed"
	made_dir=1
	keep=0
fi
if [[ ! -e $dir ]]; then
	mkdir -p "$dir" || die "cannot create $dir"
	made_dir=1
fi
[[ -d $dir ]] || die "--dir $dir: not a directory"
dir=$(cd "$dir" && pwd)
f0="$dir/dmio-bench.0"
f1="$dir/dmio-bench.1"
stamp="$dir/dmio-bench.filled"

[[ -n $out ]] || out="$script_dir/out/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out" || die "cannot create $out"

# shellcheck disable=SC2317	# (called by the trap)
cleanup() {
	rm -f "$out/.times" "$out/.r"
	if ((!keep)); then
		rm -f "$f0" "$f1" "$stamp"
		((made_dir)) && rmdir "$dir" 2>/dev/null
	fi
	return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Run "$@" with a time limit, so that a hung engine cannot hang the
# benchmark; in the foreground, so that ^C reaches it.
run() {
	local limit=$1
	shift
	timeout --foreground --signal=KILL "$limit" "$@"
}

prepare_files() {
	local f need avail
	if ((keep)) && [[ -f $stamp && $(cat "$stamp") == "$size_bytes" ]] &&
	   [[ $(stat -c %s "$f0" 2>/dev/null) == "$size_bytes" &&
	      $(stat -c %s "$f1" 2>/dev/null) == "$size_bytes" ]]; then
		echo "$prog: reusing $f0 and $f1" >&2
		return 0
	fi
	rm -f "$f0" "$f1" "$stamp"
	need=$(( 2 * size_bytes ))
	avail=$(( $(stat -f -c '%a * %S' "$dir") ))
	(( avail > need + (need >> 4) )) ||
		die "$dir: $((avail >> 20)) MiB free, need $((need >> 20)) MiB for 2 x $size"
	for f in "$f0" "$f1"; do
		echo "$prog: allocating and writing $f ($size)" >&2
		fallocate -l "$size_bytes" "$f" 2>/dev/null ||
			truncate -s "$size_bytes" "$f" || die "cannot create $f"
		# Write every block once: on ext4/xfs fallocate leaves unwritten
		# extents, whose first write converts them (a metadata update
		# per write), which would make write numbers allocation numbers.
		if ((have_fio)); then
			run 3600 fio --name=fill --filename="$f" --rw=write --bs=1M \
				--ioengine=io_uring --direct=1 --iodepth=16 \
				--size="$size_bytes" --output=/dev/null ||
				die "writing $f failed"
		else
			run 3600 dd if=/dev/zero of="$f" bs=1M count=$((size_bytes >> 20)) \
				oflag=direct conv=notrunc status=none || die "writing $f failed"
		fi
	done
	sync -f "$f0"	# commit the extent conversions before measuring
	echo "$size_bytes" >"$stamp"
}

#----------------------------------------------------------------
# Measurements.  fio_run and dmio_run print "iops lat_us" on success.

# CPU seconds (user + system) used so far by the reaped children of this
# shell: every thread of fio or dmio-bench, io_uring's io-wq workers
# included.  The same yardstick for both; fio's own usr_cpu/sys_cpu count
# only its job thread and miss the io-wq workers (which do the copying on
# tmpfs).  Sets $cpu.  `times` must run in this very process (not in a
# $(...) subshell, whose children counters start from zero).
children_cpu() {
	local child
	times >"$out/.times"
	{ read -r _; read -r child; } <"$out/.times"
	cpu=$(awk -v t="$child" 'BEGIN { split(t, f, /[ms]+/);
		printf "%.3f", f[1] * 60 + f[2] + f[3] * 60 + f[4] }')
}

# fio_run NAME RW QD FILE [FILE...]: one fio job per file, each at QD.
fio_run() {
	local name=$1 rw=$2 qd=$3 f json
	shift 3
	json="$out/$name.fio.json"
	local args=(--output-format=json --output="$json" --group_reporting
		--ioengine=io_uring --direct=1 --rw="$rw" --bs="$bs_bytes"
		--iodepth="$qd" --time_based --runtime="$runtime"
		--ramp_time="$ramp" --norandommap --randrepeat=0)
	for f in "$@"; do
		args+=(--name="$name-$(basename "$f")" --filename="$f")
	done
	echo "fio ${args[*]}" >"$out/$name.fio.cmd"
	run $((runtime + ramp + 120)) fio "${args[@]}" 2>"$out/$name.fio.err" || return 1
	if [[ -n $py ]]; then
		"$py" - "$json" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
d = j["write"] if j["write"]["total_ios"] > 0 else j["read"]
if j.get("error", 0) or d["total_ios"] == 0:
    sys.exit(1)
print("%.0f %.2f" % (d["iops"], d["lat_ns"]["mean"] / 1e3))
EOF
	else
		jq -er '.jobs[0] | (if .write.total_ios > 0 then .write else .read end) as $d
			| select(.error == 0 and $d.total_ios > 0)
			| "\($d.iops | floor) \($d.lat_ns.mean / 10 | floor / 100)"' "$json"
	fi
}

# dmio_run NAME MODE QD FILE [FILE...]
dmio_run() {
	local name=$1 mode=$2 qd=$3 line
	shift 3
	echo "$bin --mode $mode --qd $qd --bs $bs_bytes --runtime $runtime --ramp $ramp $*" \
		>"$out/$name.dmio.cmd"
	run $((runtime + ramp + 120)) "$bin" --mode "$mode" --qd "$qd" --bs "$bs_bytes" \
		--runtime "$runtime" --ramp "$ramp" "$@" \
		>"$out/$name.dmio.out" 2>"$out/$name.dmio.err" || return 1
	line=$(grep -m1 '^iops=' "$out/$name.dmio.out") || return 1
	awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
	       if (v["errors"] != 0 || v["ios"] == 0) exit 1
	       printf "%.0f %.2f\n", v["iops"], v["lat_us"] }' <<<"$line"
}

declare -A res		# res[job.tool] = "iops cpu_us lat_us", or FAIL
failed=0

median() {	# of the whitespace-separated numbers on stdin
	tr ' ' '\n' | grep -v '^$' | sort -g |
		awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2];
		       else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# measure JOB TOOL NAME ARGS...: run REPEAT times, keep the median of each field.
declare -A samples
measure_once() {
	local job=$1 tool=$2 rep=$3 r
	shift 3
	local name="job$job-$tool-$rep"
	if [[ $tool == fio ]]; then
		((have_fio)) || { samples[$job.$tool]+=" n/a"; return; }
	fi
	# -> "iops cpu_us_per_io lat_us".  The CPU is that of the whole run,
	# ramp included, so it is spread over (runtime + ramp) x iops I/Os.
	r=$(
		children_cpu
		c0=$cpu
		if [[ $tool == fio ]]; then
			fio_run "$name" "$@" >"$out/.r" || exit 1
		else
			dmio_run "$name" "$@" >"$out/.r" || exit 1
		fi
		r=$(<"$out/.r")
		children_cpu
		c1=$cpu
		awk -v r="$r" -v c0="$c0" -v c1="$c1" -v t=$((runtime + ramp)) 'BEGIN {
			split(r, f, " ")
			printf "%s %.2f %s\n", f[1], (c1 - c0) * 1e6 / (f[1] * t), f[2] }'
	)
	if [[ $? -ne 0 || -z $r ]]; then
		echo "$prog: job $job $tool run $rep FAILED (see $out/$name.*)" >&2
		samples[$job.$tool]+=" FAIL"
		failed=1
		return
	fi
	echo "$prog: job $job $tool run $rep: $(cut -d' ' -f1 <<<"$r") IOPS" >&2
	samples[$job.$tool]+=" ${r// /:}"
}

reduce() {	# samples[$1] -> res[$1]
	local s=${samples[$1]:-} f out=""
	if [[ -z $s ]]; then res[$1]="n/a"; return; fi
	if [[ $s == *FAIL* ]]; then res[$1]="FAIL"; return; fi
	if [[ $s == *n/a* ]]; then res[$1]="n/a"; return; fi
	for f in 1 2 3; do
		out+=" $(tr ' ' '\n' <<<"$s" | grep -v '^$' | cut -d: -f"$f" | median)"
	done
	res[$1]=${out# }
}

# job JOB FIO_RW DMIO_MODE QD FILE...
job() {
	local j=$1 rw=$2 mode=$3 qd=$4 rep
	shift 4
	want "$j" || return 0
	for ((rep = 1; rep <= repeat; rep++)); do
		if ((rep % 2)); then
			measure_once "$j" fio "$rep" "$rw" "$qd" "$@"
			measure_once "$j" dmio "$rep" "$mode" "$qd" "$@"
		else
			measure_once "$j" dmio "$rep" "$mode" "$qd" "$@"
			measure_once "$j" fio "$rep" "$rw" "$qd" "$@"
		fi
	done
	reduce "$j.fio"
	reduce "$j.dmio"
}

#----------------------------------------------------------------

fsinfo=$(findmnt -n -o FSTYPE,SOURCE -T "$dir" 2>/dev/null | head -n1 | tr -s ' ')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
prepare_files

job 1 randread read 1 "$f0"
job 2 randread read "$qd_high" "$f0"
job 3 randwrite write 1 "$f0"
job 4 randwrite write "$qd_high" "$f0"
job 5 randwrite write "$qd_high" "$f0" "$f1"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

#----------------------------------------------------------------
# The table

field() {	# field RES N: the Nth number of a result, or the result itself
	local v=${res[$1]:-n/a}
	[[ $v == *" "* ]] && cut -d' ' -f"$2" <<<"$v" || echo "$v"
}
num() { [[ $1 =~ ^[0-9.]+$ ]]; }
ratio() {	# ratio NUM DEN [SCALE]
	if num "$1" && num "$2" && [[ $2 != 0 ]]; then
		awk -v a="$1" -v b="$2" -v s="${3:-1}" 'BEGIN { printf "%.2f", s * a / b }'
	else
		echo "n/a"
	fi
}
verdict() {	# verdict RATIO TARGET
	num "$1" || { echo "n/a"; return; }
	awk -v r="$1" -v t="$2" 'BEGIN { print (r + 0 >= t + 0) ? "ok" : "MISSED" }'
}
missed=0

qd1=1 qdh=$qd_high
declare -A title=(
	[1]="randread  ${bs} QD$qd1"
	[2]="randread  ${bs} QD$qdh"
	[3]="randwrite ${bs} QD$qd1"
	[4]="randwrite ${bs} QD$qdh"
	[5]="randwrite ${bs} QD$qdh 2 files"
)
declare -A target=([2]=0.90 [4]=0.90)

{
	echo
	echo "dmio-bench: $dir ($fsinfo), 2 files x $size, ${runtime} s per run" \
		"(+${ramp} s ramp), median of $repeat"
	echo "  $(uname -sr), $(fio --version 2>/dev/null || echo 'no fio'), $(nproc) CPUs," \
		"load average before: $load_before, after: $load_after"
	echo
	printf '%-33s %10s %10s %8s  %s\n' "job" "fio IOPS" "dmio IOPS" "ratio" "target"
	printf '%-33s %10s %10s %8s  %s\n' "---" "--------" "---------" "-----" "------"
	for j in 1 2 3 4 5; do
		want "$j" || continue
		fi=$(field "$j.fio" 1)
		di=$(field "$j.dmio" 1)
		if [[ $j == 5 ]]; then
			# fio wrote fio_iops blocks in all; one dmio request writes 2.
			r=$(ratio "$di" "$fi" 2)
			printf '%-33s %10s %10s %8s  %s\n' "$j ${title[$j]}" "$fi" "$di" "$r" \
				"- (2 x dmio / fio: device writes)"
			r=$(ratio "$di" "$(field 4.dmio 1)")
			v=$(verdict "$r" 0.45)
			[[ $v == MISSED ]] && missed=$((missed + 1))
			printf '%-33s %10s %10s %8s  %s\n' "5/4 2 regions vs 1 region (dmio)" \
				"-" "$di" "$r" ">= 0.45 $v (dmio job 5 / dmio job 4)"
			continue
		fi
		r=$(ratio "$di" "$fi")
		if [[ -n ${target[$j]:-} ]]; then
			v=$(verdict "$r" "${target[$j]}")
			[[ $v == MISSED ]] && missed=$((missed + 1))
			t=">= ${target[$j]} $v"
		else
			t="-"
		fi
		printf '%-33s %10s %10s %8s  %s\n' "$j ${title[$j]}" "$fi" "$di" "$r" "$t"
	done
	echo
	echo "targets missed: $missed"
	echo
	echo "details (medians):"
	printf '%-33s %10s %10s %10s %10s  %s\n' "job" "fio us/IO" "dmio us/IO" \
		"fio lat" "dmio lat" "dmio batching (last run)"
	for j in 1 2 3 4 5; do
		want "$j" || continue
		last="$out/job$j-dmio-$repeat.dmio.err"
		batch=""
		[[ -f $last ]] && batch=$(grep -o 'sqes/submit=[0-9.]* requests/submit=[0-9.]*' "$last")
		printf '%-33s %10s %10s %10s %10s  %s\n' "$j ${title[$j]}" \
			"$(field "$j.fio" 2)" "$(field "$j.dmio" 2)" \
			"$(field "$j.fio" 3)" "$(field "$j.dmio" 3)" "${batch:-n/a}"
	done
	echo "  us/IO: CPU time (user+sys, all threads incl. io-wq workers) per I/O;"
	echo "  lat: mean completion latency in us."
	echo "  job 5 fio: one job per file, each at QD$qdh (${qdh}x2 writes in flight,"
	echo "  like dmio's $qdh requests x 2 regions); its fio us/IO is per device"
	echo "  write, its dmio us/IO per request (2 device writes)."
	grep -h WARNING "$out"/*.dmio.err 2>/dev/null | sort -u | sed 's/^/  /'
	echo "  raw output: $out"
} | tee "$out/table.txt"

exit "$failed"

#!/usr/bin/env bash
# (Re)write the seed corpora of tests/fuzz/corpus/ (except regress-*
# files, the regression inputs of bugs found, which are kept).  Needs a
# built fusemirror (FUSEMIRROR=path, default build/src/fusemirror) for real
# superblocks; run as root (create locks and probes the legs).
# Usage: tests/fuzz/gen_corpus.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
fm=${FUSEMIRROR:-$top/build/src/fusemirror}
c=$here/corpus
tmp=$(mktemp -d /tmp/fm-corpus.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

for d in superblock bitmap config ctl_request ctl_reply cli_reply; do
	mkdir -p "$c/$d"
	find "$c/$d" -type f ! -name 'regress-*' -delete
done

# superblock, bitmap: real superblocks of a few geometries (2 and 3 legs,
# named, small and large regions); bitmap inputs are a superblock then
# bitmap bytes (all clear, some set, all set).
n=0
for geo in "64M 1M 2" "200M 64M 3" "1G 4M 2 --name=fuzzed"; do
	set -- $geo
	size=$1 region=$2 legs=$3; shift 3
	paths=()
	for ((i = 0; i < legs; i++)); do paths+=("$tmp/leg$i"); done
	rm -f "${paths[@]}"
	"$fm" create --size "$size" --region-size "$region" "$@" "${paths[@]}" >/dev/null
	n=$((n + 1))
	head -c 4096 "$tmp/leg0" >"$c/superblock/sb$n"
	head -c 4096 "$tmp/leg$((legs - 1))" >"$c/superblock/sb$n-last-leg"
	{ head -c 4096 "$tmp/leg0"; head -c 64 /dev/zero; } >"$c/bitmap/clear$n"
	{ head -c 4096 "$tmp/leg0"; printf '\x01\x80\x00\xff\x10\x00\x00\x00\x55\xaa'; } >"$c/bitmap/some$n"
	{ head -c 4096 "$tmp/leg0"; head -c 4096 /dev/zero | tr '\0' '\377'; } >"$c/bitmap/full$n"
done

# config: small files, then a NUL and -o options (run.sh adds the example
# file, conf/fusemirror.conf, as it is at each run).
printf '[array]\nlegs=/a;/b\n[mount]\ncache_mode=writethrough\ncache_size=64M\nthreads=4\n' \
	>"$c/config/small.conf"
printf '[mount]\nsync_speed_min=300M\n\0ro,allow_other,block_size=64k,read_policy=first' \
	>"$c/config/with-opts"
printf '\0max_read_errors=5,sync_speed_min=4M,sync_speed_max=1G,bitmap_delay=250,name=x.img' \
	>"$c/config/opts-only"
printf '[mount]\nbogus=1\n' >"$c/config/unknown-key"

# ctl_request: words, each ended by a NUL.
printf 'status\0' >"$c/ctl_request/status"
printf 'status\0json\0' >"$c/ctl_request/status-json"
printf 'fail\0/dev/loop0\0' >"$c/ctl_request/fail"
printf 'inject\0flags=reads,writes\0error=5\0sector=0\0count=8\0rate_ppm=0\0up_ms=0\0down_ms=0\0seed=0\0' \
	>"$c/ctl_request/inject"
printf 'inject\0flags=corrupt_reads,drop_writes\0error=0\0rate_ppm=10000\0up_ms=100\0down_ms=50\0seed=7\0' \
	>"$c/ctl_request/inject-rate"
printf 'inject\0flags=reads,heal_on_write\0error=28\0sector=8\0count=128\0' >"$c/ctl_request/inject-heal"
# ... and every verb of the daemon's table with its arguments (verbs.c).
printf 'status\0prometheus\0' >"$c/ctl_request/status-prometheus"
printf 'sync\0' >"$c/ctl_request/sync"
printf 'pid\0' >"$c/ctl_request/pid"
printf 'help\0' >"$c/ctl_request/help"
printf 'stop\0' >"$c/ctl_request/stop"
printf 'remove\0/tmp/leg1\0' >"$c/ctl_request/remove"
printf 'add\0/tmp/leg1\0force\0write-mostly\0' >"$c/ctl_request/add"
printf 'write-mostly\0/tmp/leg1\0on\0' >"$c/ctl_request/write-mostly"
printf 'replace\0/tmp/leg1\0/tmp/leg2\0force\0' >"$c/ctl_request/replace"
printf 'scrub\0repair\0' >"$c/ctl_request/scrub"
printf 'scrub-cancel\0' >"$c/ctl_request/scrub-cancel"
printf 'inject\0/tmp/leg1\0clear\0' >"$c/ctl_request/inject-clear"
printf 'inject\0/tmp/leg1\0show\0' >"$c/ctl_request/inject-show"
printf 'inject\0/tmp/leg1\0flags=reads\0error=5\0sector=0\0count=8\0' >"$c/ctl_request/inject-leg"
printf 'monitor\0recent\0' >"$c/ctl_request/monitor"

# cli_reply: bodies the command line reads (sync, pid, monitor lines).
printf 'action=check done=1024 total=4096 mismatches=8 last_action=idle\n' >"$c/cli_reply/sync"
printf 'action=idle last_action=repair mismatches=0\n' >"$c/cli_reply/sync-idle"
printf '4242\n' >"$c/cli_reply/pid"
printf '{"seq":3,"time":"2026-12-05T09:00:00Z","event":"Fail","value":5,"error":"Input/output error","array":{"mountpoint":"/mnt/a","uuid":"0e5c7b2a-1d7e-4c39-9d2b-5a8d3c1f2e4b","name":"a"},"leg":{"slot":1,"path":"/dev/loop1","uuid":"7a1e1f0e-2b8c-4d0e-8f3a-9c6d5b4a3e21"}}' >"$c/cli_reply/event-fail"
printf '{"event":"RebuildFinished","value":0,"array":{"mountpoint":"/mnt/a"}}' >"$c/cli_reply/event-noleg"
printf '{"event":"DegradedArray","value":1e300,"leg":{"slot":-1,"path":null}}' >"$c/cli_reply/event-odd"

# ctl_reply: first byte bit 0 = the request could not be sent whole.
printf '\0OK\nstate: active\nlegs: 2\n' >"$c/ctl_reply/ok"
printf '\0OK\n' >"$c/ctl_reply/ok-empty"
printf '\0ERR 22 malformed request: empty request\n' >"$c/ctl_reply/err"
printf '\0ERR 5\n' >"$c/ctl_reply/err-nomsg"
printf '\1' >"$c/ctl_reply/epipe"
printf '\0garbage without a newline' >"$c/ctl_reply/garbage"
echo "seed corpora written to $c"

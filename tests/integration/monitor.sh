#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Events and monitoring (issue 11 item 4): a fail / remove / add / rebuild
# cycle seen by `fusemirror monitor` in its two forms and by
# `status --format=prometheus`:
#   - two monitors run (--json, and --program with a script that records
#     its arguments and FUSEMIRROR_* variables); `status` counts them;
#   - `fail` leg 0, `remove` it, `monitor --oneshot` reports DegradedArray;
#     write, `add` it back, the rebuild ends: both monitors saw exactly
#     Fail, DegradedArray, Remove, Add, RebuildStarted, RebuildFinished,
#     ArrayOptimal, in that order, with the leg's slot and path; then
#     `umount`: Stopped (clean), and both monitors exit 0 on their own;
#   - the Prometheus text (HELP/TYPE for every metric, parsed with its
#     escapes) says so: one Fail/Add/RebuildFinished, both legs in_sync,
#     not degraded, the regions resynced;
#   - `status --format=prometheus MNT MNT2` merges two arrays: each HELP and
#     TYPE once, each family's samples together, both arrays' samples;
#   - leg 1's path holds a double quote, a backslash and a byte that is not
#     UTF-8: `status --json` is valid UTF-8 JSON (U+FFFD for the bad byte)
#     and the Prometheus label carries the quote and backslash escaped.
source "$(dirname "$0")/lib.sh"
cd "$T" || fail "cannot cd to $T"

SIZE=$((64 << 20))
mkdir "$T/mnt"
leg0=$T/leg0
leg1=$T/$'leg1 "q\\ \xff'
fm_create --size "$SIZE" --region-size 1M "$leg0" "$leg1"
fm_mount "$leg0" "$leg1" "$T/mnt"
mnt=$(realpath "$T/mnt")
img=$mnt/image

cat >"$T/prog.sh" <<'SH'
#!/bin/sh
printf '%s|%s|%s|%s|%s\n' "$1" "$2" "${3-}" "$FUSEMIRROR_LEG_SLOT" "$FUSEMIRROR_VALUE" >>"$(dirname "$0")/prog.out"
SH
chmod +x "$T/prog.sh"

log "two monitors subscribe"
"$FM" monitor --json "$mnt" >"$T/json.out" 2>"$T/json.err" &
mon_json=$!
"$FM" monitor --program "$T/prog.sh" "$mnt" >"$T/prog.stdout" 2>"$T/prog.err" &
mon_prog=$!
fm_wait_status "$mnt" .monitors 2 30

dd if=/dev/urandom of="$img" bs=1M count=4 oflag=direct conv=notrunc,fsync status=none

log "fail, remove; oneshot says degraded"
fm_ok fail "$mnt" "$leg0" >/dev/null
fm_ok remove "$mnt" "$leg0" >/dev/null
"$FM" monitor --oneshot --json "$mnt" >"$T/oneshot.out"
python3 - "$T/oneshot.out" <<'PY' || fail "monitor --oneshot on a degraded array: $(cat "$T/oneshot.out")"
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) == 1, lines
e = json.loads(lines[0])
assert e["event"] == "DegradedArray" and e["value"] == 1, e
PY

log "write, add back, rebuild"
dd if=/dev/urandom of="$img" bs=1M count=2 seek=10 oflag=direct conv=notrunc,fsync status=none
fm_ok add "$mnt" "$leg0" >/dev/null
fm_wait_leg_state "$mnt" "$leg0" in_sync 60
fm_wait_sync_idle "$mnt" 60
"$FM" monitor --oneshot --json "$mnt" >"$T/oneshot.out"
[[ ! -s $T/oneshot.out ]] || fail "monitor --oneshot on an optimal array printed: $(cat "$T/oneshot.out")"

log "status --json: valid UTF-8 JSON with a non-UTF-8 leg path"
timeout -k 5 30 "$FM" status --format=json "$mnt" >"$T/st.json"
python3 - "$T/st.json" <<'PY' || fail "status --format=json is not valid UTF-8 JSON"
import json, sys
raw = open(sys.argv[1], "rb").read()
j = json.loads(raw.decode("utf-8", errors="strict"))
paths = [l["path"] for l in j["legs"]]
assert any(p.endswith('leg1 "q\\ \ufffd') for p in paths), paths
assert j["event_counts"]["Fail"] == 1 and j["event_counts"]["RebuildFinished"] == 1, j["event_counts"]
PY
cmp <(timeout -k 5 30 "$FM" status --json "$mnt" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(sorted(j))') \
    <(python3 -c 'import json,sys; print(sorted(json.load(open(sys.argv[1]))))' "$T/st.json") ||
	fail "status --json and --format=json differ in their keys"

log "status --format=prometheus after the cycle"
timeout -k 5 30 "$FM" status --format=prometheus "$mnt" >"$T/metrics.txt"
python3 - "$T/metrics.txt" "$leg0" <<'PY' || fail "Prometheus values (see $T/metrics.txt)"
import re, sys
text = open(sys.argv[1], "rb").read().decode("utf-8", errors="strict")
leg0 = sys.argv[2]
helps, types, samples = set(), set(), []
label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
for line in text.splitlines():
    if line.startswith("# HELP "):
        helps.add(line.split()[2]); continue
    if line.startswith("# TYPE "):
        _, _, name, typ = line.split()
        assert typ in ("gauge", "counter"), line
        types.add(name); continue
    m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\d+)', line)
    assert m, f"not a sample line: {line!r}"
    labels = {}
    rest = m.group(2)
    pos = 0
    for lm in label_re.finditer(rest):
        assert lm.start() == pos, f"bad labels: {rest!r}"
        v = re.sub(r'\\(.)', lambda x: {"n": "\n"}.get(x.group(1), x.group(1)), lm.group(2))
        labels[lm.group(1)] = v
        pos = lm.end() + 1
    assert pos >= len(rest), f"bad labels: {rest!r}"
    samples.append((m.group(1), labels, int(m.group(3))))
names = {s[0] for s in samples}
assert names <= helps and names <= types, f"no HELP/TYPE for {names - helps - types}"
def get(name, **want):
    hits = [v for n, l, v in samples if n == name and all(l.get(k) == w for k, w in want.items())]
    assert len(hits) == 1, f"{name} {want}: {len(hits)} samples"
    return hits[0]
assert get("fusemirror_events_total", event="Fail") == 1
assert get("fusemirror_events_total", event="Remove") == 1
assert get("fusemirror_events_total", event="Add") == 1
assert get("fusemirror_events_total", event="RebuildFinished") == 1
assert get("fusemirror_events_total", event="ArrayOptimal") == 1
assert get("fusemirror_array_degraded") == 0
assert get("fusemirror_array_legs_in_sync") == 2
assert get("fusemirror_array_state", state="active") == 1
assert get("fusemirror_sync_action", action="idle") == 1
assert get("fusemirror_leg_state", leg="0", state="in_sync") == 1
assert get("fusemirror_leg_state", leg="0", state="faulty") == 0
assert get("fusemirror_leg_state", leg="1", state="in_sync") == 1
p1 = [l["path"] for n, l, v in samples if n == "fusemirror_leg_state" and l.get("leg") == "1"][0]
assert p1.endswith('leg1 "q\\ \ufffd'), repr(p1)
assert get("fusemirror_leg_state", leg="0", state="in_sync", path=leg0) == 1
assert get("fusemirror_resynced_regions_total") >= 2
assert get("fusemirror_monitors") == 2
assert get("fusemirror_leg_written_bytes_total", leg="0") > 0
PY

log "two arrays: one Prometheus text, each family once"
mkdir "$T/mnt2"
fm_create --size $((16 << 20)) "$T/leg2a" "$T/leg2b"
fm_mount "$T/leg2a" "$T/leg2b" "$T/mnt2"
timeout -k 5 30 "$FM" status --format=prometheus "$mnt" "$T/mnt2" >"$T/metrics2.txt"
python3 - "$T/metrics2.txt" <<'PY' || fail "merged Prometheus text (see $T/metrics2.txt)"
import re, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
seen, current, done = {}, None, set()
arrays = set()
for line in lines:
    m = re.match(r"# (HELP|TYPE) (\S+) ", line + " ")
    name = m.group(2) if m else re.match(r"[^{ ]+", line).group(0)
    if m:
        key = (m.group(1), name)
        assert key not in seen, f"second {key}"
        seen[key] = True
    if name != current:
        assert name not in done, f"family {name} split in two"
        if current:
            done.add(current)
        current = name
    if name == "fusemirror_array_info" and not m:
        arrays.add(re.search(r'array="([^"]+)"', line).group(1))
assert len(arrays) == 2, arrays
assert ("HELP", "fusemirror_events_total") in seen
PY
fm_umount "$T/mnt2"

log "umount: Stopped, the monitors end"
fm_umount "$mnt"
for pid in "$mon_json" "$mon_prog"; do
	rc=0
	timeout 30 tail --pid="$pid" -f /dev/null || fail "monitor $pid still runs after the daemon stopped"
	wait "$pid" || rc=$?
	assert_eq "$rc" 0 "exit status of monitor $pid"
done

want="Fail DegradedArray Remove Add RebuildStarted RebuildFinished ArrayOptimal Stopped"
python3 - "$T/json.out" "$want" "$leg0" "$mnt" <<'PY' || fail "monitor --json: $(cat "$T/json.out")"
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]).read().splitlines()]
names = [e["event"] for e in events]
assert names == sys.argv[2].split(), names
by = {e["event"]: e for e in events}
for n in ("Fail", "Remove", "Add"):
    assert by[n]["leg"]["slot"] == 0 and by[n]["leg"]["path"] == sys.argv[3], by[n]
for n in ("DegradedArray", "RebuildStarted", "ArrayOptimal", "Stopped"):
    assert by[n]["leg"] is None, by[n]
assert by["Stopped"]["value"] == 1, by["Stopped"]
# The mirror's words on the cause (struct fm_event.detail).
assert by["Fail"]["detail"] == "marked faulty by the administrator", by["Fail"]
assert by["Add"]["detail"].startswith("re-added"), by["Add"]
assert by["DegradedArray"]["detail"] is None, by["DegradedArray"]
assert by["RebuildStarted"]["value"] == by["RebuildFinished"]["value"] >= 2 << 20, by
assert all(e["array"]["mountpoint"] == sys.argv[4] for e in events)
assert len({e["array"]["uuid"] for e in events}) == 1
seqs = [e["seq"] for e in events]
assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
PY
python3 - "$T/prog.out" "$want" "$leg0" "$mnt" <<'PY' || fail "monitor --program: $(cat "$T/prog.out")"
import sys
rows = [l.split("|") for l in open(sys.argv[1]).read().splitlines()]
assert [r[0] for r in rows] == sys.argv[2].split(), rows
for ev, mp, leg, slot, value in rows:
    assert mp == sys.argv[4], rows
    if ev in ("Fail", "Remove", "Add"):
        assert leg == sys.argv[3] and slot == "0", rows
    else:
        assert leg == "" and slot == "", rows
PY
[[ ! -s $T/json.err && ! -s $T/prog.err ]] || fail "monitor errors: $(cat "$T/json.err" "$T/prog.err")"
log "PASS"

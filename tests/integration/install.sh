#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# `meson install` into a DESTDIR puts exactly these files in their standard
# places, and the unit it installs passes `systemd-analyze verify`:
#   PREFIX/SBINDIR/fusemirror                      (executable, --version runs)
#   PREFIX/MANDIR/man8/fusemirror.8, man5/fusemirror.conf.5  (version filled in)
#   PREFIX/share/doc/fusemirror/examples/fusemirror.conf
#   systemd's system unit dir (systemd.pc)/fusemirror@.service
#                                                  (ExecStart= = the installed binary)
#   bash-completion's completionsdir (bash-completion.pc)/fusemirror
# and nothing else.  The unit is verified with the installed man pages on
# MANPATH (its Documentation= must resolve) and ExecStart= pointed at the
# DESTDIR's binary (verify checks that it is executable).
source "$(dirname "$0")/lib.sh"
cd "$T" || fail "cannot cd to $T"

BUILD=${FM_BUILD_ROOT:-}
[[ -f $BUILD/meson-info/intro-buildoptions.json ]] ||
	fail "FM_BUILD_ROOT is not set to the meson build directory (run through meson)"
command -v systemd-analyze >/dev/null || fail "systemd-analyze is missing (systemd is in .ci/deps)"

opt() {
	python3 - "$BUILD/meson-info/intro-buildoptions.json" "$1" <<'PY'
import json, sys
for o in json.load(open(sys.argv[1])):
    if o["name"] == sys.argv[2]:
        print(o["value"])
PY
}
prefix=$(opt prefix)
sbindir=$(opt sbindir)
mandir=$(opt mandir)
datadir=$(opt datadir)
unitdir=$(opt systemdsystemunitdir)
[[ -n $unitdir ]] || unitdir=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || true)
[[ -n $unitdir ]] || unitdir=/lib/systemd/system
bcdir=$(opt bashcompletiondir)
[[ -n $bcdir ]] || bcdir=$(pkg-config --variable=completionsdir bash-completion 2>/dev/null || true)
[[ -n $bcdir ]] || bcdir=$prefix/$datadir/bash-completion/completions
abs() { [[ $1 == /* ]] && echo "$1" || echo "$prefix/$1"; }

D=$T/dest
log "meson install --destdir $D"
meson install -C "$BUILD" --destdir "$D" --no-rebuild --quiet >"$T/install.log" 2>&1 ||
	fail "meson install failed: $(tail -n 20 "$T/install.log")"

want=(
	"$(abs "$sbindir")/fusemirror"
	"$(abs "$mandir")/man8/fusemirror.8"
	"$(abs "$mandir")/man5/fusemirror.conf.5"
	"$(abs "$datadir")/doc/fusemirror/examples/fusemirror.conf"
	"$(abs "$unitdir")/fusemirror@.service"
	"$(abs "$bcdir")/fusemirror"
)
(cd "$D" && find . -type f -o -type l | sed 's|^\.||' | sort) >"$T/got"
printf '%s\n' "${want[@]}" | sed 's|//*|/|g' | sort >"$T/want"
diff -u "$T/want" "$T/got" >"$T/diff" || fail "installed files differ from the list: $(cat "$T/diff")"

bin=$D$(abs "$sbindir")/fusemirror
[[ -x $bin ]] || fail "$bin is not executable"
"$bin" --version | grep -q '^fusemirror [0-9]' || fail "$bin --version: $("$bin" --version)"
for m in "$D$(abs "$mandir")"/man*/*; do
	! grep -q '@VERSION@' "$m" || fail "$m: @VERSION@ not filled in"
done
unit=$D$(abs "$unitdir")/fusemirror@.service
exec_bin=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
assert_eq "$exec_bin" "$(abs "$sbindir")/fusemirror" "the unit's ExecStart= binary"
bash -n "$D$(abs "$bcdir")/fusemirror" || fail "the installed completion is not valid bash"

log "systemd-analyze verify"
mkdir "$T/units"
sed "s|^ExecStart=$exec_bin|ExecStart=$bin|" "$unit" >"$T/units/fusemirror@.service"
cp "$T/units/fusemirror@.service" "$T/units/fusemirror@data.service"
for u in fusemirror@.service fusemirror@data.service; do
	MANPATH=$D$(abs "$mandir") systemd-analyze verify "$T/units/$u" >"$T/verify.out" 2>&1 ||
		fail "systemd-analyze verify $u failed: $(cat "$T/verify.out")"
	[[ ! -s $T/verify.out ]] || fail "systemd-analyze verify $u warns: $(cat "$T/verify.out")"
done
# A unit that verify rejects, to prove the check looks.
sed 's|^KillMode=mixed|KillMode=sideways|' "$T/units/fusemirror@data.service" >"$T/units/bad@data.service"
MANPATH=$D$(abs "$mandir") systemd-analyze verify "$T/units/bad@data.service" >"$T/verify.out" 2>&1 || true
[[ -s $T/verify.out ]] || fail "systemd-analyze verify accepts a bad KillMode=: the check proves nothing"
log "ok"

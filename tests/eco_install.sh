#!/bin/sh
# Install and use the library as a C programmer would:
#   make install; cc app.c $(pkg-config --cflags --libs aiometer); ./app
# and the same with pkg-config --static, linking libaiometer.a.
#
# Under `make check` it installs into a staging directory (make install
# DESTDIR=...), checks and uses that copy, then uninstalls it and checks that
# nothing is left.  With --installed (`make installcheck`, which
# `make distcheck` runs) it checks the copy already installed under the
# configured prefix (and $DESTDIR, if set).
#
# Every check is on the installed files only: the program is built outside
# the source and build trees, with nothing but what pkg-config says, and the
# test confirms from /proc/self/maps that it ran with the installed library.
. "$(dirname "$0")/eco_lib.sh"

mode=staged
[ "${1-}" = --installed ] && mode=installed

# `make installcheck` runs this as a plain command, for which 77 would be an
# error: there, a skip is a pass with a message.
skip() {
    if [ "$mode" = installed ]; then
        echo "SKIP (as a pass): $*"
        exit 0
    fi
    eco_skip "$*"
}

# A program linked against a sanitizer build needs the sanitizer's run-time
# first in line, which no ordinary program built from pkg-config's flags has.
[ -z "$SANITIZER_CFLAGS" ] || skip "sanitizer build: the installed library needs $SANITIZER_CFLAGS in every program"
command -v "$PKG_CONFIG" >/dev/null 2>&1 || skip "pkg-config ($PKG_CONFIG) is not available"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/eco_install.XXXXXX") || eco_error "mktemp failed"
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

# Run make on the build tree as a separate make, not a sub-make of the one
# running the tests: its job-server descriptors are not ours.
submake() {
    (unset MAKEFLAGS MFLAGS MAKELEVEL; cd "$builddir" && $MAKE "$@")
}

if [ "$mode" = staged ]; then
    root=$tmp/root
    echo "installing into the staging directory $root"
    if ! submake install DESTDIR="$root" > "$tmp/install.log" 2>&1; then
        tail -n 30 "$tmp/install.log"
        eco_fail "make install DESTDIR=$root failed"
        eco_finish
    fi
else
    root=${DESTDIR-}
    echo "checking the copy installed under $root$prefix"
fi

inst_lib=$root$libdir
inst_inc=$root$includedir
inst_pc=$root$pkgconfigdir
inst_man=$root$mandir

# What libtool was told to build: shared, static, or both.
shared=$("$builddir/libtool" --config | sed -n 's/^build_libtool_libs=//p')
static=$("$builddir/libtool" --config | sed -n 's/^build_old_libs=//p')
echo "shared library: $shared, static library: $static"

# ---- the installed files ----------------------------------------------------
header=$inst_inc/aiometer.h
if [ -f "$header" ]; then
    grep -n '@[A-Za-z_]*@' "$header" > "$tmp/subst" &&
        eco_fail "$header has configure placeholders left: $(cat "$tmp/subst")"
    grep -n 'config\.h' "$header" > /dev/null &&
        eco_fail "$header refers to the private config.h"
else
    eco_fail "$header is not installed"
fi

if [ "$shared" = yes ]; then
    [ -f "$inst_lib/libaiometer.so" ] || eco_fail "$inst_lib/libaiometer.so is not installed"
fi
if [ "$static" = yes ]; then
    [ -f "$inst_lib/libaiometer.a" ] || eco_fail "$inst_lib/libaiometer.a is not installed"
fi
# Examples, benchmark and tests are never installed: the one program in
# the bin directory is the command aiometer(1), and it runs.
if [ "$mode" = staged ]; then
    progs=$(ls "$root$bindir" 2>/dev/null | tr '\n' ' ')
    [ "$progs" = "aiometer$EXEEXT " ] ||
        eco_fail "programs installed in $bindir: '$progs', expected only aiometer$EXEEXT"
fi
if [ -x "$root$bindir/aiometer$EXEEXT" ]; then
    # A staged copy finds the staged library only when told where it is.
    LD_LIBRARY_PATH=$inst_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
        "$root$bindir/aiometer$EXEEXT" --version | grep -q "$PACKAGE_VERSION" ||
        eco_fail "$bindir/aiometer --version does not say $PACKAGE_VERSION"
else
    eco_fail "$root$bindir/aiometer$EXEEXT is not installed"
fi

pc=$inst_pc/aiometer.pc
if [ -f "$pc" ]; then
    echo "--- $pc"
    cat "$pc"
    echo "---"
    field() { sed -n "s/^$1: *//p" "$pc"; }
    [ "$(field Version)" = "$PACKAGE_VERSION" ] ||
        eco_fail "aiometer.pc: Version is '$(field Version)', not $PACKAGE_VERSION"
    case " $(field Cflags) " in
    *" $PTHREAD_CFLAGS "*) ;;
    *) eco_fail "aiometer.pc: Cflags lacks $PTHREAD_CFLAGS" ;;
    esac
    case " $(field Libs.private) " in
    *" $PTHREAD_LIBS "*) ;;
    *) eco_fail "aiometer.pc: Libs.private lacks $PTHREAD_LIBS" ;;
    esac
    case " $(field Libs) " in
    *" -laiometer "*) ;;
    *) eco_fail "aiometer.pc: Libs lacks -laiometer" ;;
    esac
else
    eco_fail "$pc is not installed"
    eco_finish
fi

# Every page in man/ (a page per function, the options page, the overview
# and the .so links), where man(1) looks for it, and `man NAME` finds and
# formats it, following .so links.
pages=0
for page in "$srcdir"/man/*.[0-9]; do
    base=$(basename "$page")
    name=${base%.*}
    section=${base##*.}
    pages=$((pages + 1))
    if [ ! -f "$inst_man/man$section/$base" ]; then
        eco_fail "$inst_man/man$section/$base is not installed"
        continue
    fi
    if command -v man >/dev/null 2>&1; then
        MANPAGER=cat PAGER=cat MANWIDTH=80 MANOPT='' LC_ALL=C \
            man -M "$inst_man" "$section" "$name" > "$tmp/man.out" 2>&1
        grep -q "$name" "$tmp/man.out" && grep -q 'NAME' "$tmp/man.out" ||
            eco_fail "man -M $inst_man $section $name does not show the page: $(head -n 3 "$tmp/man.out")"
    fi
done
[ "$pages" -gt 0 ] || eco_error "no page found in $srcdir/man"
for name in $(eco_api); do
    [ -f "$inst_man/man3/$name.3" ] || eco_fail "no installed page for $name"
done
if command -v man >/dev/null 2>&1; then
    echo "$pages pages installed in $inst_man, and man finds each"
else
    echo "$pages pages installed in $inst_man (no man(1) to format them)"
fi

# ---- a program built out of tree with pkg-config ---------------------------
PKG_CONFIG_LIBDIR=$inst_pc
PKG_CONFIG_PATH=
export PKG_CONFIG_LIBDIR PKG_CONFIG_PATH
if [ -n "$root" ]; then
    # The .pc file names the configured prefix; the sysroot puts the staging
    # directory in front of its -I and -L paths.
    PKG_CONFIG_SYSROOT_DIR=$root
    export PKG_CONFIG_SYSROOT_DIR
fi
cflags=$("$PKG_CONFIG" --cflags aiometer) || eco_fail "pkg-config --cflags aiometer failed"
libs=$("$PKG_CONFIG" --libs aiometer) || eco_fail "pkg-config --libs aiometer failed"
static_libs=$("$PKG_CONFIG" --static --libs aiometer) ||
    eco_fail "pkg-config --static --libs aiometer failed"
echo "pkg-config --cflags: $cflags"
echo "pkg-config --libs: $libs"
echo "pkg-config --static --libs: $static_libs"

mkdir "$tmp/app"
cat > "$tmp/app/app.c" <<'APP'
/* An ordinary user of the installed library. */
#include <aiometer.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *square(void *arg)
{
    uintptr_t x = (uintptr_t)arg;
    aiometer_sleep(0.001);
    return (void *)(x * x);
}

int main(void)
{
    enum { N = 50 };
    aiometer_job jobs[N];
    void *results[N];
    aiometer_stats stats;
    aiometer_options opts = {0};
    char line[4096], path[4096] = "unknown";
    FILE *maps;

    for (uintptr_t i = 0; i < N; i++)
        jobs[i] = (aiometer_job){square, (void *)i};
    opts.max_at_once = 4;
    opts.stats = &stats;
    int err = aiometer_run_all(jobs, N, results, &opts);
    if (err != 0) {
        fprintf(stderr, "aiometer_run_all: %s\n", aiometer_strerror(err));
        return 1;
    }
    for (uintptr_t i = 0; i < N; i++) {
        if ((uintptr_t)results[i] != i * i) {
            fprintf(stderr, "results[%zu] is wrong\n", (size_t)i);
            return 1;
        }
    }
    if (stats.peak_running > 4) {
        fprintf(stderr, "%zu jobs ran at once, above max_at_once\n", stats.peak_running);
        return 1;
    }
    if (aiometer_version() != AIOMETER_VERSION_NUMBER) {
        fprintf(stderr, "header %s, library %s\n", AIOMETER_VERSION_STRING,
                aiometer_version_string());
        return 1;
    }

    /* Which copy of the library runs: the loader's map of this process says,
     * and has no libaiometer at all when it was linked statically. */
    maps = fopen("/proc/self/maps", "r");
    if (maps) {
        strcpy(path, "static");
        while (fgets(line, sizeof line, maps)) {
            char *slash = strchr(line, '/');
            if (slash && strstr(slash, "/libaiometer")) {
                slash[strcspn(slash, "\n")] = '\0';
                snprintf(path, sizeof path, "%s", slash);
                break;
            }
        }
        fclose(maps);
    }
    printf("library=%s\nversion=%s\n", path, aiometer_version_string());
    return 0;
}
APP

# The library's directory with symbolic links resolved, as the map shows it.
real_lib=$(cd "$inst_lib" 2>/dev/null && pwd -P)

build_and_run() { # label, expected library (a directory, or "static"), cc arguments...
    label=$1
    want=$2
    shift 2
    if ! (cd "$tmp/app" && $CC -std=c11 -Wall -Wextra -Wpedantic -Werror "$@") \
            > "$tmp/app/cc.log" 2>&1; then
        eco_fail "$label: the program does not build with: $CC $*"
        sed 's/^/    /' "$tmp/app/cc.log"
        return
    fi
    if ! (cd "$tmp/app" && LD_LIBRARY_PATH=$inst_lib ./app) > "$tmp/app/run.log" 2>&1; then
        eco_fail "$label: the program failed:"
        sed 's/^/    /' "$tmp/app/run.log"
        return
    fi
    got=$(sed -n 's/^library=//p' "$tmp/app/run.log")
    case $want:$got in
    *:unknown) echo "$label: ran (no /proc/self/maps to say which library)" ;;
    static:static) echo "$label: ran, linked statically" ;;
    static:*) eco_fail "$label: linked with --static but loaded $got" ;;
    *:"$want"/*) echo "$label: ran with $got" ;;
    *) eco_fail "$label: ran with '$got', not the copy in $want" ;;
    esac
    [ "$(sed -n 's/^version=//p' "$tmp/app/run.log")" = "$PACKAGE_VERSION" ] ||
        eco_fail "$label: the library says version $(sed -n 's/^version=//p' "$tmp/app/run.log")"
}

if [ "$shared" = yes ]; then
    # pkg-config's output is a list of words: unquoted on purpose.
    build_and_run "shared" "$real_lib" $cflags -o app app.c $libs
    rm -f "$tmp/app/app"
fi

if [ "$static" = yes ]; then
    # A fully static program is the plain meaning of --static; where the C
    # library has no static form, link libaiometer.a by name instead.  Either
    # way the link needs Libs.private.
    printf 'int main(void) { return 0; }\n' > "$tmp/app/probe.c"
    if (cd "$tmp/app" && $CC -static $PTHREAD_CFLAGS -o probe probe.c) > /dev/null 2>&1; then
        build_and_run "static" static -static $cflags -o app app.c $static_libs
    else
        echo "static: $CC cannot link a fully static program; linking libaiometer.a by path"
        archive_libs=$(echo " $static_libs " | sed "s| -laiometer | $inst_lib/libaiometer.a |")
        build_and_run "static" static $cflags -o app app.c $archive_libs
    fi
fi

# The header is usable from C++ too (its extern "C" block).
cxx=$CXX
[ -n "$cxx" ] || cxx=$(command -v c++ 2>/dev/null || true)
if [ -n "$cxx" ] && [ "$shared" = yes ]; then
    printf '#include <aiometer.h>\nint main() { return aiometer_version() == AIOMETER_VERSION_NUMBER ? 0 : 1; }\n' \
        > "$tmp/app/app.cc"
    if (cd "$tmp/app" && $cxx -Wall -Wextra -Werror $cflags -o app_cxx app.cc $libs) \
            > "$tmp/app/cxx.log" 2>&1; then
        (cd "$tmp/app" && LD_LIBRARY_PATH=$inst_lib ./app_cxx) ||
            eco_fail "the C++ program failed"
        echo "c++: builds and runs"
    else
        eco_fail "the header does not compile as C++ with $cxx:"
        sed 's/^/    /' "$tmp/app/cxx.log"
    fi
fi

# ---- uninstall leaves nothing behind (staged only) --------------------------
if [ "$mode" = staged ]; then
    if submake uninstall DESTDIR="$root" > "$tmp/uninstall.log" 2>&1; then
        left=$(find "$root" ! -type d | head -n 20)
        [ -z "$left" ] || eco_fail "make uninstall left files behind: $left"
    else
        tail -n 30 "$tmp/uninstall.log"
        eco_fail "make uninstall DESTDIR=$root failed"
    fi
fi

eco_finish

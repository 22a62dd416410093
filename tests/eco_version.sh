#!/bin/sh
# The version is written once, in configure.ac, and everything that carries it
# agrees: the header's macros and the library's run-time answers
# (tests/eco_version), configure's PACKAGE_VERSION, the pkg-config file's
# Version (aiometer.pc in the build directory, also as pkg-config reads it),
# and the shared library's soname, which libtool derives from -version-info
# current:revision:age as libaiometer.so.(current - age).
. "$(dirname "$0")/eco_lib.sh"

prog=$builddir/tests/eco_version$EXEEXT
[ -x "$prog" ] || eco_error "$prog is not built"
out=$("$prog") || {
    echo "$out"
    eco_fail "tests/eco_version: the header and the library disagree"
}
echo "$out"
header=$(echo "$out" | sed -n 's/^version=//p')
[ -n "$header" ] || eco_error "tests/eco_version printed no version"

[ "$header" = "$PACKAGE_VERSION" ] ||
    eco_fail "the header says $header, configure's PACKAGE_VERSION $PACKAGE_VERSION"

pc=$builddir/aiometer.pc
[ -f "$pc" ] || eco_error "$pc is missing"
pc_version=$(sed -n 's/^Version: *//p' "$pc")
echo "aiometer.pc: Version: $pc_version"
[ "$pc_version" = "$header" ] || eco_fail "aiometer.pc says $pc_version, the header $header"

# What a user's build sees: pkg-config reading the same file.
if command -v "$PKG_CONFIG" >/dev/null 2>&1; then
    modversion=$(PKG_CONFIG_LIBDIR=$builddir PKG_CONFIG_PATH='' "$PKG_CONFIG" --modversion aiometer)
    echo "pkg-config --modversion aiometer: $modversion"
    [ "$modversion" = "$header" ] || eco_fail "pkg-config says $modversion, the header $header"
    PKG_CONFIG_LIBDIR=$builddir PKG_CONFIG_PATH='' "$PKG_CONFIG" --exists "aiometer >= $header" ||
        eco_fail "pkg-config --exists 'aiometer >= $header' is false"
fi

# The soname follows the libtool numbers configure.ac sets.
if lib=$(eco_shared_lib); then
    if command -v readelf >/dev/null 2>&1; then
        soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
    elif command -v objdump >/dev/null 2>&1; then
        soname=$(objdump -p "$lib" | awk '$1 == "SONAME" { print $2 }')
    else
        soname=
    fi
    if [ -n "$soname" ]; then
        current=${AIOMETER_LT_VERSION%%:*}
        age=${AIOMETER_LT_VERSION##*:}
        expected=libaiometer.so.$((current - age))
        echo "soname: $soname (-version-info $AIOMETER_LT_VERSION)"
        [ "$soname" = "$expected" ] ||
            eco_fail "the soname is $soname; -version-info $AIOMETER_LT_VERSION makes $expected"
    else
        echo "no readelf or objdump, or no soname: soname not checked"
    fi
fi

eco_finish

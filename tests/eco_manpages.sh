#!/bin/sh
# Every exported aiometer_* function has a man page under man/ that `man NAME`
# finds once installed, and every page is well formed: the sections our pages
# promise, a NAME and SYNOPSIS that name the function, SEE ALSO references that
# exist, a listing in dist_man_MANS (so it is installed), and no groff warning.
# The functions come from `nm -D` of the built library; without nm or a shared
# library, from the header.
. "$(dirname "$0")/eco_lib.sh"

man=$srcdir/man
tmp=$(mktemp -d "${TMPDIR:-/tmp}/eco_manpages.XXXXXX") || eco_error "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

if lib=$(eco_shared_lib) && eco_have_nm; then
    echo "functions: exported by $lib"
    eco_dynamic_symbols "$lib" | grep '^aiometer_' > "$tmp/functions"
else
    echo "functions: declared in include/aiometer.h.in (no nm or no shared library)"
    eco_header_api > "$tmp/functions"
fi
[ -s "$tmp/functions" ] || eco_error "no aiometer_* function found"

# The page a name leads to: a file with only ".so man3/OTHER.3" leads to
# OTHER.3, as man(1) follows it once installed.
resolve() {
    page=$1
    target=$(sed -n 's|^\.so  *man[0-9]/\(.*\)$|\1|p' "$page")
    if [ -n "$target" ]; then
        echo "$man/$target"
    else
        echo "$page"
    fi
}

# The lines of one section, from its .SH to the next.
section() {
    awk -v want="$2" '
        /^\.SH / { name = substr($0, 5); gsub(/"/, "", name); on = (name == want); next }
        on { print }' "$1"
}

# Text without font changes and escapes, to look for names in.
plain() {
    sed -e 's/\\f[BIRP]//g' -e 's/\\-/-/g' -e 's/\\e/\\/g' -e 's/^\.[A-Z][A-Z]* //' \
        -e 's/"//g'
}

# A function's page has the sections of liburing's and curl's pages; the
# overview in section 7 has no return value or errors of its own.
sections_3='NAME
SYNOPSIS
DESCRIPTION
RETURN VALUE
ERRORS
EXAMPLE
SEE ALSO'
# A command's page (section 1) has OPTIONS and EXIT STATUS instead.
sections_1='NAME
SYNOPSIS
DESCRIPTION
OPTIONS
EXIT STATUS
EXAMPLE
SEE ALSO'
sections_7='NAME
DESCRIPTION
EXAMPLE
SEE ALSO'

check_page() { # page name
    page=$1
    name=$2
    title=$(sed -n 's/^\.TH  *\([^ ]*\) .*/\1/p' "$page")
    case $page in
    *.1) [ "$title" = "$(basename "$page" .1)" ] || eco_fail "$page: .TH says '$title'" ;;
    *.3) [ "$title" = "$(basename "$page" .3)" ] || eco_fail "$page: .TH says '$title'" ;;
    *.7) [ "$title" = "$(basename "$page" .7)" ] || eco_fail "$page: .TH says '$title'" ;;
    esac
    case $page in
    *.1) required=$sections_1 ;;
    *.7) required=$sections_7 ;;
    *) required=$sections_3 ;;
    esac
    echo "$required" | while IFS= read -r s; do
        grep -q "^\.SH \"*$s\"*\$" "$page" || echo "$page: no $s section"
    done > "$tmp/missing"
    if [ -s "$tmp/missing" ]; then
        while IFS= read -r line; do eco_fail "$line"; done < "$tmp/missing"
    fi
    if [ -n "$name" ]; then
        section "$page" NAME | plain | grep -q "\(^\|[ ,]\)${name}[ ,]" ||
            eco_fail "$page: the NAME section does not list $name"
        section "$page" SYNOPSIS | plain | grep -q "[ *]$name(" ||
            eco_fail "$page: the SYNOPSIS does not declare $name"
    fi
    # Each SEE ALSO reference to one of our pages must exist.
    section "$page" "SEE ALSO" | sed -n 's/^\.BR  *\([a-z_]*\) *(\([137]\)).*/\1.\2/p' |
        grep -e '^aiometer_' -e '^libaiometer' > "$tmp/refs"
    while IFS= read -r ref; do
        # libaiometer-redis keeps its pages beside its code.
        [ -f "$man/$ref" ] || [ -f "$srcdir/redis/man/$ref" ] ||
            eco_fail "$page: SEE ALSO names $ref, which does not exist"
    done < "$tmp/refs"
    if command -v groff >/dev/null 2>&1; then
        groff -man -Tutf8 -ww -z "$page" > "$tmp/groff" 2>&1
        if [ -s "$tmp/groff" ]; then
            eco_fail "$page: groff warns:"
            sed 's/^/    /' "$tmp/groff"
        fi
    fi
}

# One page for every function.
count=0
while IFS= read -r f; do
    count=$((count + 1))
    if [ ! -f "$man/$f.3" ]; then
        eco_fail "$f is exported but man/$f.3 does not exist"
        continue
    fi
    page=$(resolve "$man/$f.3")
    if [ ! -f "$page" ]; then
        eco_fail "man/$f.3 points to $page, which does not exist"
        continue
    fi
    check_page "$page" "$f"
done < "$tmp/functions"
echo "$count functions checked"

# The pages that are not about one function: the options, the overview and
# the command.
for page in "$man/aiometer_options.3" "$man/libaiometer.7" "$man/aiometer.1"; do
    if [ -f "$page" ]; then
        check_page "$page" ""
    else
        eco_fail "$page does not exist"
    fi
done

# aiometer_options(3) documents every field of the three structs it covers,
# each as a tagged paragraph (.TP then .I field) or in the running text.
for struct in aiometer_options aiometer_stats aiometer_progress; do
    awk -v s="$struct" '
        $0 ~ "^typedef struct " s " \\{" { on = 1; next }
        on && /^}/ { on = 0 }
        on { print }' "$srcdir/include/aiometer.h.in" |
        sed -e 's|/\*.*\*/||' -e 's|/\*.*||' -e 's|^ *\*.*||' |
        sed -n 's/.*[ *]\([a-z_][a-z0-9_]*\);.*/\1/p' > "$tmp/fields"
    [ -s "$tmp/fields" ] || eco_fail "no field of $struct found in the header"
    while IFS= read -r field; do
        grep -q "^\.I[R]* $field\( \|\$\)" "$man/aiometer_options.3" ||
            eco_fail "aiometer_options(3) does not document $struct.$field"
    done < "$tmp/fields"
done

# Every page is installed: listed in man/local.mk's dist_man_MANS.
for page in "$man"/*.[137]; do
    base=$(basename "$page")
    grep -q "man/$base\( \|\$\)" "$srcdir/man/local.mk" ||
        eco_fail "man/$base is not listed in man/local.mk"
done

eco_finish

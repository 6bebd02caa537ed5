#!/bin/sh
# check_docs.sh SRC BUILD -- the reference documentation builds from the public
# headers with no warning: every type, function, enum value and macro of
# include/aims (and the generated aims_version.h) has a doc block, and no doc
# block refers to something that does not exist. Doxygen's own
# WARN_IF_UNDOCUMENTED/WARN_IF_DOC_ERROR checks; the headers are the
# specification (STYLE.md, SQLite), so an undocumented public symbol fails
# `make test`. The HTML lands in BUILD/docs/reference (not installed).
#
# One class of warning is reported but not yet fatal: "the following
# parameters of f(...) are not documented", emitted when a doc block names
# some @param but not all. Those blocks describe their parameters in prose;
# turning them into @param lists is tracked (issue 14) and the count printed
# here must only go down: DOCS_MAX_PARTIAL_PARAMS below.
# Skips (77) when doxygen is not installed.
set -u
src=$1
build=$2
DOCS_MAX_PARTIAL_PARAMS=34
command -v doxygen >/dev/null 2>&1 || { echo "doxygen not installed"; exit 77; }
out="$build/docs/reference"
mkdir -p "$out"
cat > "$out/Doxyfile" <<EOD
PROJECT_NAME = libaims
PROJECT_BRIEF = "AI microservices in C: preprocess, train, serve"
INPUT = $src/include/aims $build/include/aims/aims_version.h $src/docs/REFERENCE.md
USE_MDFILE_AS_MAINPAGE = $src/docs/REFERENCE.md
FILE_PATTERNS = *.h
STRIP_FROM_PATH = $src/include $build/include
OUTPUT_DIRECTORY = $out
GENERATE_HTML = YES
GENERATE_LATEX = NO
HAVE_DOT = NO
QUIET = YES
EXTRACT_ALL = NO
WARN_IF_UNDOCUMENTED = YES
WARN_IF_DOC_ERROR = YES
WARN_NO_PARAMDOC = NO
WARN_LOGFILE = $out/warnings.log
ENABLE_PREPROCESSING = YES
MACRO_EXPANSION = YES
PREDEFINED = AIMS_API= AIMS_EXTERN_C_BEGIN= AIMS_EXTERN_C_END=
EOD
rm -f "$out/warnings.log"
if ! doxygen "$out/Doxyfile" >"$out/doxygen.out" 2>&1; then
    cat "$out/doxygen.out"
    exit 1
fi
partial=$(grep -c "warning: The following parameter" "$out/warnings.log")
other=$(grep "warning:" "$out/warnings.log" | grep -v "warning: The following parameter")
echo "doxygen: $partial doc blocks with some parameters undocumented (limit $DOCS_MAX_PARTIAL_PARAMS)"
if [ -n "$other" ]; then
    echo "$other"
    exit 1
fi
if [ "$partial" -gt "$DOCS_MAX_PARTIAL_PARAMS" ]; then
    grep -A3 "warning: The following parameter" "$out/warnings.log"
    exit 1
fi
test -s "$out/html/index.html" || { echo "no HTML written"; exit 1; }
echo "reference: $out/html/index.html"

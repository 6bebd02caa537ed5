#!/bin/sh
# check_docs.sh SRC BUILD -- the reference documentation builds from the public
# headers with no warning: every type, function, enum value and macro of
# include/aims (and the generated aims_version.h) has a doc block, and no doc
# block refers to something that does not exist. Doxygen's own
# WARN_IF_UNDOCUMENTED/WARN_IF_DOC_ERROR checks; the headers are the
# specification (STYLE.md, SQLite), so an undocumented public symbol fails
# `make test`. The HTML lands in BUILD/docs/reference (not installed).
#
# Every warning fails, also "the following parameters of f(...) are not
# documented" (a doc block naming some @param but not all): the same as
# Doxygen's WARN_AS_ERROR, but with the whole list printed at once.
# Skips (77) when doxygen is not installed.
set -u
src=$1
build=$2
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
warnings=$(grep "warning:" "$out/warnings.log" || true)
if [ -n "$warnings" ]; then
    cat "$out/warnings.log"
    echo "doxygen: $(echo "$warnings" | wc -l) warning(s)"
    exit 1
fi
test -s "$out/html/index.html" || { echo "no HTML written"; exit 1; }
echo "doxygen: 0 warnings; reference: $out/html/index.html"

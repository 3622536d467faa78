#!/usr/bin/env bash
# docs.sh -- builds the API reference from include/tapegrad.h with Doxygen. Fails if any public
# symbol is undocumented or any doc comment is malformed (WARN_AS_ERROR in docs/Doxyfile).
#   bash .ci/docs.sh [OUTPUT_DIR]      (default: build/docs; the HTML lands in OUTPUT_DIR/html)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if ! command -v doxygen >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "docs: installing doxygen"
        apt-get update -qq >/dev/null && apt-get install -y -qq doxygen >/dev/null
    else
        echo "docs: FAIL: doxygen is not installed (apt-get install doxygen)" >&2
        exit 1
    fi
fi

export TG_DOCS_OUT=${1:-$root/build/docs}
# The version shown on every page comes from the one place it is defined.
TG_DOCS_VERSION=$(sed -n 's/^project(tapegrad VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
export TG_DOCS_VERSION
mkdir -p "$TG_DOCS_OUT"

if doxygen docs/Doxyfile; then
    echo "docs: PASS: reference for tapegrad $TG_DOCS_VERSION in $TG_DOCS_OUT/html/index.html"
else
    echo "docs: FAIL: Doxygen reported the warnings above (undocumented or malformed)" >&2
    exit 1
fi

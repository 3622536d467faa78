#!/usr/bin/env bash
# symbols.sh LIB HEADER... -- the shared library exports exactly the functions the public headers
# declare with TG_API: no private symbol leaks out (a consumer would link against it and the
# SONAME would freeze it), and no declared function is missing. Exit 1 on any difference.
set -euo pipefail
lib=$1
shift
exported=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' |
  grep -v '^_' | sort -u)
declared=$(grep -hv '^#' "$@" | tr '\n' ' ' | grep -o 'TG_API[^;{]*(' |
  sed -E 's/\($//; s/.*[^A-Za-z0-9_]([A-Za-z_][A-Za-z0-9_]*)$/\1/' | sort -u)
extra=$(comm -23 <(echo "$exported") <(echo "$declared"))
missing=$(comm -13 <(echo "$exported") <(echo "$declared"))
status=0
if [ -n "$extra" ]; then
  echo "symbols: FAIL: $lib exports symbols no public header declares:"
  echo "$extra" | sed 's/^/  /'
  status=1
fi
if [ -n "$missing" ]; then
  echo "symbols: FAIL: declared with TG_API but not exported by $lib:"
  echo "$missing" | sed 's/^/  /'
  status=1
fi
[ $status -eq 0 ] && echo "symbols: $(echo "$exported" | wc -l) exported, all declared in the public headers"
exit $status

#!/usr/bin/env bash
# format-check.sh -- reports where the C/C++ sources differ from .clang-format, and where any tracked
# text file breaks .editorconfig's basic rules (tabs for indentation, trailing whitespace, missing
# final newline, CRLF).
#   bash .ci/format-check.sh            report only; exit 0
#   bash .ci/format-check.sh --strict   exit 1 on any difference (what CI runs)
#   bash .ci/format-check.sh --fix      apply clang-format in place (the lead, after merging)
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
mode=${1:-report}

# Formatting differs between clang-format versions: use the one Debian 12 ships when present.
cf=$(command -v clang-format-14 || command -v clang-format || true)
if [ -z "$cf" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq >/dev/null && apt-get install -y -qq clang-format >/dev/null
        cf=$(command -v clang-format-14 || command -v clang-format)
    else
        echo "format: FAIL: clang-format is not installed (apt-get install clang-format)" >&2
        exit 1
    fi
fi

mapfile -t sources < <(git ls-files '*.c' '*.h' '*.cpp' '*.hpp')
if [ "$mode" = --fix ]; then
    "$cf" -i "${sources[@]}"
    echo "format: applied $("$cf" --version | head -1) to ${#sources[@]} files"
    exit 0
fi

bad_format=0
for f in "${sources[@]}"; do
    if ! out=$("$cf" "$f" | diff -u --label "$f" --label "$f (clang-format)" "$f" -); then
        bad_format=$((bad_format + 1))
        printf '%s\n' "$out"
    fi
done

# .editorconfig: LF, no trailing whitespace (except Markdown), final newline, spaces not tabs.
bad_editorconfig=0
while IFS= read -r f; do
    case "$f" in *.png | *.jpg | *.gz | *.idx | *.bin | *.safetensors) continue ;; esac
    grep -Iq . "$f" 2>/dev/null || continue # binary or empty
    problems=()
    grep -q $'\r' "$f" && problems+=("CRLF line endings")
    [ -n "$(tail -c1 "$f")" ] && problems+=("no final newline")
    case "$f" in
    *.md) ;;
    *) grep -nE '[[:space:]]+$' "$f" >/dev/null && problems+=("trailing whitespace") ;;
    esac
    case "$f" in
    Makefile | *.mk) ;;
    *) grep -nP '^\t' "$f" >/dev/null && problems+=("tab indentation") ;;
    esac
    if [ ${#problems[@]} -gt 0 ]; then
        bad_editorconfig=$((bad_editorconfig + 1))
        echo "$f: ${problems[*]}"
    fi
done < <(git ls-files)

echo "format: ${#sources[@]} C/C++ files checked with $("$cf" --version | head -1)"
echo "format: $bad_format file(s) differ from .clang-format; $bad_editorconfig file(s) break .editorconfig"
if [ "$mode" = --strict ] && [ $((bad_format + bad_editorconfig)) -gt 0 ]; then
    echo "format: FAIL"
    exit 1
fi
echo "format: done (${mode#--})"

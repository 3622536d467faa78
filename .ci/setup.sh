#!/usr/bin/env bash
# The README's first command: install what is missing on Debian 12, build, run the main demo.
set -euo pipefail
cd "$(dirname "$0")/.."

# Everything tapegrad builds, tests and draws with, as Debian packages.
packages=(build-essential cmake pkg-config libcriterion-dev libxxhash-dev zlib1g-dev libcjson-dev
          gnuplot-nox graphviz valgrind clang libclang-rt-14-dev clang-tidy doxygen cppcheck
          python3-numpy libopenblas-dev libopenmpi-dev openmpi-bin wamerican
          dataset-fashion-mnist)
# The browser test of the step-through page (tests/browser): Debian's chromium, and Node.js with
# npm from Debian unless the machine has them already.
packages+=(chromium)
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "== installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# puppeteer-core for the browser test, pinned by tests/browser/package-lock.json (it downloads no
# browser: the test drives /usr/bin/chromium). Reinstalled only when the lock file changed.
if [ ! tests/browser/node_modules/.package-lock.json -nt tests/browser/package-lock.json ]; then
  echo "== installing the browser test's npm packages (tests/browser)"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

echo "== building (build/)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null

echo "== running the demo"
./build/examples/circles

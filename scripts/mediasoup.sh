#!/usr/bin/env bash
# Build (once per machine) and install the real mediasoup room server the call tests use.
#
# mediasoup@3.8.4 is the last release whose npm tarball vendors every C++ dependency of its
# worker, so it builds offline. Today's toolchains need two source patches (applied below with
# sed): the vendored gyp imports collections.MutableSet / collections.Iterable (moved to
# collections.abc in Python 3.10), and abseil calls std::max(SIGSTKSZ, 65536), which glibc >= 2.34
# no longer compiles (SIGSTKSZ is a long there). The built worker is cached outside the clone,
# keyed by version and patch hash, so later runs (and CI's clean clones) take seconds:
#   ${XDG_CACHE_HOME:-~/.cache}/faceproof/mediasoup-3.8.4-<patchhash>/mediasoup-worker
# Then `npm ci` in tests/support/sfu installs mediasoup with MEDIASOUP_WORKER_BIN set (it skips
# its own build) and the cached worker is copied where mediasoup looks for it.
#
# Usage: scripts/mediasoup.sh            build/reuse the worker, install tests/support/sfu and
#                                        bundle its browser subject page (build/subject.js)
# Prints the worker path on its last line. Exit status non-zero (with the build log's tail on
# stderr) when the build fails; the tests then skip with that error (tests/support/sfu/BUILD_ERROR).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
version=3.8.4
sfu_dir="$root/tests/support/sfu"

patch_sources() {
  # $1: the unpacked npm package directory
  sed -i 's/collections\.MutableSet/collections.abc.MutableSet/; s/^import collections$/import collections\nimport collections.abc/' \
    "$1/worker/deps/gyp/pylib/gyp/common.py"
  sed -i 's/collections\.Iterable/collections.abc.Iterable/g; s/^import collections$/import collections\nimport collections.abc/' \
    "$1/worker/deps/gyp/pylib/gyp/msvs_emulation.py"
  sed -i 's/std::max(SIGSTKSZ, 65536)/std::max<size_t>(SIGSTKSZ, 65536)/' \
    "$1/worker/deps/libwebrtc/deps/abseil-cpp/abseil-cpp/absl/debugging/failure_signal_handler.cc"
}

patch_hash="$(declare -f patch_sources | sha256sum | cut -c1-12)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/faceproof/mediasoup-$version-$patch_hash"
worker="$cache/mediasoup-worker"
error_file="$sfu_dir/BUILD_ERROR"
mkdir -p "$cache"

build_worker() {
  local work start
  work="$(mktemp -d)"
  start=$(date +%s)
  echo "mediasoup: building the worker of mediasoup@$version offline (about 7 min on 2 cores) into $cache" >&2
  (cd "$work" && npm pack --silent "mediasoup@$version" >/dev/null && tar xzf "mediasoup-$version.tgz")
  patch_sources "$work/package"
  grep -q 'collections.abc.MutableSet' "$work/package/worker/deps/gyp/pylib/gyp/common.py"
  grep -q 'std::max<size_t>(SIGSTKSZ' "$work/package/worker/deps/libwebrtc/deps/abseil-cpp/abseil-cpp/absl/debugging/failure_signal_handler.cc"
  if ! PYTHON=python3 make -C "$work/package/worker" -j"$(nproc)" >"$cache/build.log" 2>&1; then
    rm -rf "$work"
    return 1
  fi
  cp "$work/package/worker/out/Release/mediasoup-worker" "$worker.tmp"
  mv "$worker.tmp" "$worker"
  echo "$(( $(date +%s) - start ))" >"$cache/build_seconds"
  echo "mediasoup: worker built in $(cat "$cache/build_seconds") s" >&2
  rm -rf "$work"
}

(
  flock 9
  if [ ! -x "$worker" ]; then
    if ! build_worker; then
      { echo "mediasoup@$version worker build failed; last lines of $cache/build.log:"; tail -n 30 "$cache/build.log"; } | tee "$error_file" >&2
      exit 1
    fi
  fi
) 9>"$cache/.lock"

cd "$sfu_dir"
stamp="node_modules/.faceproof-installed"
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  MEDIASOUP_WORKER_BIN="$worker" npm ci --no-audit --no-fund --loglevel=error >&2
  cp package-lock.json "$stamp"
fi
mkdir -p node_modules/mediasoup/worker/out/Release
cp -f "$worker" node_modules/mediasoup/worker/out/Release/mediasoup-worker
# the browser subject's page: mediasoup-client + protoo-client bundled (served by room.js, no CDN)
node_modules/.bin/esbuild subject/subject.js --bundle --format=iife --target=chrome110 \
  --log-level=warning --outfile=build/subject.js >&2
rm -f "$error_file"
echo "$worker"

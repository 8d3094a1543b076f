#!/usr/bin/env bash
# The installed package is enough to build and run a daemon of one's own: installs this build
# into a temporary prefix, builds a copy of examples/counter against it (find_package(cqrs)),
# starts counterd on a fresh database on the server at DATABASE_URL, sends one command with the
# installed cqrsctl and checks the reply, the aggregate state and the stored event. Every step
# has a deadline.
#
#   install_example_test.sh <cmake> <build dir> <source dir> <generator> <c++ compiler> <-Werror: ON|OFF>
set -euo pipefail

CMAKE=$1
BUILD_DIR=$2
SOURCE_DIR=$3
GENERATOR=$4
CXX_COMPILER=$5
WERROR=$6

fail() {
  echo "FAIL: $*" >&2
  exit 1
}
step() { echo "== $*"; }

[[ -n "${DATABASE_URL:-}" ]] || fail "DATABASE_URL is not set: run through scripts/test"
PSQL=$(command -v psql || ls -1 /usr/lib/postgresql/*/bin/psql 2>/dev/null | tail -n1 || true)
[[ -x "$PSQL" ]] || fail "psql not found (scripts/bootstrap installs postgresql)"

work=$(mktemp -d "${TMPDIR:-/tmp}/cqrs-package-test.XXXXXX")
prefix=$work/prefix
db=cqrs_package_test_$$_$RANDOM
daemon_pid=
cleanup() {
  if [[ -n "$daemon_pid" ]]; then
    kill -KILL "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  "$PSQL" -X -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" \
    >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# DATABASE_URL with its database replaced: a URI's path, or a keyword/value string's dbname.
with_database() {
  local url=$1 name=$2
  if [[ "$url" =~ ^(postgres(ql)?://[^/?]*)(/[^?]*)?(\?.*)?$ ]]; then
    echo "${BASH_REMATCH[1]}/$name${BASH_REMATCH[4]}"
  else
    echo "$url dbname=$name"
  fi
}

# True while the process runs (a child that exited but is not yet reaped does not count).
alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n "$state" && "$state" != Z ]]
}

# Runs a command with a deadline; on failure prints its log and fails the test.
run_logged() {
  local seconds=$1 log=$2
  shift 2
  if ! timeout --kill-after=10 "$seconds" "$@" >"$log" 2>&1; then
    cat "$log" >&2
    fail "$* (exit or timeout after ${seconds}s)"
  fi
}

step "cmake --install $BUILD_DIR --prefix $prefix"
run_logged 120 "$work/install.log" "$CMAKE" --install "$BUILD_DIR" --prefix "$prefix"
for path in bin/cqrsd bin/cqrsctl bin/cqrs-migrate \
  include/cqrs/domain/domain.hpp include/cqrs/pg/migrate.hpp include/cqrsd/actors/gateway.hpp \
  lib/libcqrs.a lib/libcqrs_actors.a \
  lib/cmake/cqrs/cqrsConfig.cmake lib/cmake/cqrs/cqrsConfigVersion.cmake \
  lib/cmake/cqrs/cqrsTargets.cmake lib/cmake/cqrs/FindCAF.cmake \
  share/cqrs/schema/001_event_store.sql share/cqrs/config/cqrsd.conf \
  share/cqrs/config/cqrsd.service; do
  [[ -e "$prefix/$path" ]] || fail "cmake --install did not install $path"
done

step "build examples/counter against the installed package"
cp -r "$SOURCE_DIR/examples/counter" "$work/counter"
flags="-Wall -Wextra -Wpedantic -Wshadow"
[[ "$WERROR" == "ON" ]] && flags+=" -Werror"
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
run_logged 300 "$work/configure.log" "$CMAKE" -S "$work/counter" -B "$work/counter-build" \
  -G "$GENERATOR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$CXX_COMPILER" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF "${launcher[@]}"
found=$(sed -n 's/^cqrs_DIR:PATH=//p' "$work/counter-build/CMakeCache.txt")
[[ "$found" == "$prefix/lib/cmake/cqrs" ]] ||
  fail "find_package(cqrs) found '$found', not the package in $prefix"
run_logged 600 "$work/build.log" "$CMAKE" --build "$work/counter-build" -j2
[[ -x "$work/counter-build/counterd" ]] || fail "the example built no counterd"

step "start counterd on a fresh database (working directory without schema/ or config/)"
timeout 30 "$PSQL" -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "CREATE DATABASE \"$db\"" ||
  fail "cannot create database $db"
db_url=$(with_database "$DATABASE_URL" "$db")
mkdir "$work/run"
cd "$work/run"
"$work/counter-build/counterd" --db.url="$db_url" --server.port=0 \
  >"$work/counterd.out" 2>"$work/counterd.err" &
daemon_pid=$!
port=
for ((attempt = 0; attempt < 300; ++attempt)); do
  line=$(grep -m1 '^counterd: listening on ' "$work/counterd.out" || true)
  if [[ "$line" =~ :([0-9]+)$ ]]; then
    port=${BASH_REMATCH[1]}
    break
  fi
  alive "$daemon_pid" || break
  sleep 0.1
done
if [[ -z "$port" ]]; then
  cat "$work/counterd.out" "$work/counterd.err" >&2
  fail "counterd did not report a listening port within 30 s"
fi
[[ "$line" == "counterd: listening on 127.0.0.1:$port" ]] ||
  fail "counterd listens on '$line', expected 127.0.0.1"

step "dispatch IncrementCounter through the installed cqrsctl (port $port)"
reply=$(timeout 30 "$prefix/bin/cqrsctl" --port "$port" \
  dispatch IncrementCounter '{"counter_id":"c1","by":2}') || fail "cqrsctl dispatch failed: $reply"
echo "$reply"
expected_start='{"status":"ok","aggregate_id":"c1","stream_id":"counter-c1","version":1,"command_id":"'
expected_events='"events":[{"data":{"by":2,"counter_id":"c1","value":2},"type":"CounterIncremented"}],"position":"'
[[ "$reply" == "$expected_start"* && "$reply" == *"$expected_events"* ]] ||
  fail "unexpected reply: $reply"
[[ "$reply" =~ \"command_id\":\"([0-9a-f-]{36})\" ]] || fail "no command id in: $reply"
command_id=${BASH_REMATCH[1]}

state=$(timeout 30 "$prefix/bin/cqrsctl" --port "$port" state Counter c1) ||
  fail "cqrsctl state failed: $state"
[[ "$state" == '{"version":1,"state":{"counter_id":"c1","value":2}}' ]] ||
  fail "unexpected state: $state"

rows=$(timeout 30 "$PSQL" -X -At -F'|' "$db_url" -c \
  "SELECT stream_id, stream_version, event_type, event_version,
          data = '{\"counter_id\":\"c1\",\"by\":2,\"value\":2}'::jsonb,
          metadata->>'command_id'
     FROM cqrs.events ORDER BY global_position") || fail "cannot read cqrs.events"
[[ "$rows" == "counter-c1|1|CounterIncremented|1|t|$command_id" ]] ||
  fail "cqrs.events holds '$rows', expected the one CounterIncremented of command $command_id"

step "the installed cqrsd finds the same schema (its migrations are compiled in)"
migrated=$(timeout 60 "$prefix/bin/cqrsd" migrate --db.url="$db_url") ||
  fail "installed cqrsd migrate failed: $migrated"
[[ "$migrated" =~ ^schema\ at\ version\ [0-9]+\ \(0\ migrations\ applied\)$ ]] ||
  fail "installed cqrsd migrate printed '$migrated', expected nothing left to apply"

step "stop counterd with SIGTERM"
kill -TERM "$daemon_pid"
# A watchdog ends a daemon that does not stop by itself; `wait` then reports the signal.
(sleep 30 && kill -KILL "$daemon_pid") >/dev/null 2>&1 &
watchdog=$!
status=0
wait "$daemon_pid" || status=$?
daemon_pid=
kill "$watchdog" 2>/dev/null || true
wait "$watchdog" 2>/dev/null || true
if ((status != 0)); then
  cat "$work/counterd.err" >&2
  fail "counterd exited with status $status after SIGTERM (137: killed after 30 s)"
fi
echo "PASS"

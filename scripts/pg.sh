#!/usr/bin/env bash
# A throwaway PostgreSQL for tests and benchmarks, from Debian's packages.
#
#   scripts/pg.sh start DIR [--watch PID [--remove]] [--fsync] [--tls CERT KEY]
#                                                     start a cluster in DIR (created)
#   scripts/pg.sh stop DIR                            stop it (DIR stays; remove it yourself)
#   scripts/pg.sh restart DIR                         start a stopped one again, same port
#   scripts/pg.sh run [--fsync] -- CMD...             start one, run CMD with it, stop it
#
# Installs `postgresql` with apt-get when no server is found (idempotent; needs root, as CI
# has), without letting the package create or start a system cluster. The cluster runs as a
# non-root user (`postgres` when root runs this, else the caller), listens on 127.0.0.1 at a
# free port and on a socket in DIR/sock, and requires a password (scram-sha-256). DIR/url is
# postgres://procflow@127.0.0.1:PORT/procflow, DIR/password its password: the superuser
# `procflow`. `--watch PID` stops the server when that process exits (a test binary killed
# mid-run leaves nothing running), and with `--remove` deletes DIR too (a benchmark's
# cluster holds gigabytes); `--tls CERT KEY` serves TLS with that certificate and key (PEM;
# plain connections are still accepted); `run` exports PROCFLOW_TEST_PG_URL and
# PROCFLOW_TEST_PG_PASSWORD_FILE to CMD. fsync is off unless --fsync (benchmarks).
set -euo pipefail

die() { echo "pg.sh: $*" >&2; exit 1; }

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] && echo "$dir"
}

ensure_installed() {
  if [ -n "$(pg_bin)" ]; then return; fi
  [ "$(id -u)" = 0 ] || die "PostgreSQL is not installed and only root can install it (apt-get install postgresql)"
  exec 8>"${TMPDIR:-/tmp}/procflow-pg-install.lock"
  flock 8
  if [ -n "$(pg_bin)" ]; then return; fi
  echo "pg.sh: installing Debian's postgresql" >&2
  # No system cluster: the tests make their own.
  mkdir -p /etc/postgresql-common
  [ -f /etc/postgresql-common/createcluster.conf ] ||
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold postgresql >/dev/null
  [ -n "$(pg_bin)" ] || die "postgresql installed but no server binary found"
}

# Runs a command as the cluster's owner.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$OWNER" -- "$@"
  else
    "$@"
  fi
}

start() {
  local dir=$1; shift
  local watch="" fsync=off remove="" tls_cert="" tls_key=""
  while [ $# -gt 0 ]; do
    case $1 in
      --watch) watch=$2; shift 2 ;;
      --remove) remove=1; shift ;;
      --fsync) fsync=on; shift ;;
      --tls) tls_cert=$2; tls_key=$3; shift 3 ;;
      *) die "start: unknown option $1" ;;
    esac
  done
  ensure_installed
  local bin; bin=$(pg_bin)
  OWNER=$(id -un)
  if [ "$(id -u)" = 0 ]; then
    OWNER=postgres
    id -u postgres >/dev/null 2>&1 || OWNER=nobody
  fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ -f "$dir/data/PG_VERSION" ] && die "$dir already holds a cluster"
  mkdir -p "$dir/sock"
  local tls_options=""
  if [ -n "$tls_cert" ]; then
    # The server refuses a key readable by others: copies it owns, 0600.
    mkdir -p "$dir/tls"
    cp "$tls_cert" "$dir/tls/server.crt"
    cp "$tls_key" "$dir/tls/server.key"
    chmod 600 "$dir/tls/server.key"
    tls_options=" -c ssl=on -c ssl_cert_file=$dir/tls/server.crt -c ssl_key_file=$dir/tls/server.key"
  fi
  head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$dir/password"
  chmod 600 "$dir/password"
  [ "$(id -u)" = 0 ] && chown -R "$OWNER" "$dir"
  # The owner must reach DIR (a mktemp directory is 0700 root).
  chmod 711 "$dir"
  as_owner "$bin/initdb" -D "$dir/data" -U procflow --auth=scram-sha-256 \
    --pwfile="$dir/password" -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  local port tries=0
  while :; do
    # Below both the ports the test suite draws for its aggregators (the 12,000 under the
    # ephemeral range: tests/it/pipeline.rs free_ports) and the ephemeral range itself, so a
    # restart on the same port never finds it taken by a test or an outgoing connection.
    port=$((10000 + RANDOM % 10000))
    echo "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir/sock -c fsync=$fsync -c synchronous_commit=$fsync -c full_page_writes=$fsync -c max_connections=200 -c shared_buffers=256MB -c max_wal_size=2GB$tls_options" >"$dir/options"
    if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "$(cat "$dir/options")" start >/dev/null; then
      break
    fi
    tries=$((tries + 1))
    [ $tries -lt 5 ] || { tail -n 20 "$dir/server.log" >&2; die "could not start a server"; }
  done
  echo "$port" >"$dir/port"
  echo "postgres://procflow@127.0.0.1:$port/procflow" >"$dir/url"
  PGPASSWORD=$(cat "$dir/password") "$bin/psql" -qAt -h 127.0.0.1 -p "$port" -U procflow -d postgres \
    -c "CREATE DATABASE procflow" >/dev/null
  if [ -n "$watch" ]; then
    # Stops the server once the watched process is gone, whatever killed it (SIGKILL
    # included: nothing of the watched process runs then), and with --remove deletes DIR.
    local cleanup="'$0' stop '$dir' >/dev/null 2>&1"
    [ -n "$remove" ] && cleanup="$cleanup; rm -rf '$dir'"
    setsid bash -c "while kill -0 $watch 2>/dev/null && [ -d '$dir/data' ]; do sleep 1; done; $cleanup" \
      </dev/null >/dev/null 2>&1 &
  fi
  echo "$dir/url"
}

stop() {
  local dir=$1
  [ -f "$dir/data/postmaster.pid" ] || return 0
  local bin; bin=$(pg_bin)
  OWNER=$(stat -c %U "$dir/data")
  as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
}

restart() {
  local dir=$1
  [ -f "$dir/data/postmaster.pid" ] && return 0
  local bin; bin=$(pg_bin)
  OWNER=$(stat -c %U "$dir/data")
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "$(cat "$dir/options")" start >/dev/null
}

case ${1:-} in
  start) [ $# -ge 2 ] || die "usage: pg.sh start DIR [--watch PID [--remove]] [--fsync] [--tls CERT KEY]"; shift; start "$@" ;;
  stop) [ $# -eq 2 ] || die "usage: pg.sh stop DIR"; stop "$2" ;;
  restart) [ $# -eq 2 ] || die "usage: pg.sh restart DIR"; restart "$2" ;;
  run)
    shift
    fsync=()
    if [ "${1:-}" = --fsync ]; then fsync=(--fsync); shift; fi
    [ "${1:-}" = -- ] && shift
    [ $# -gt 0 ] || die "usage: pg.sh run [--fsync] -- CMD..."
    dir=$(mktemp -d "${TMPDIR:-/tmp}/procflow-pg.XXXXXX")
    trap 'stop "$dir"; rm -rf "$dir"' EXIT
    start "$dir" --watch $$ "${fsync[@]}" >/dev/null
    export PROCFLOW_TEST_PG_URL PROCFLOW_TEST_PG_PASSWORD_FILE
    PROCFLOW_TEST_PG_URL=$(cat "$dir/url")
    PROCFLOW_TEST_PG_PASSWORD_FILE=$dir/password
    echo "pg.sh: PostgreSQL at $PROCFLOW_TEST_PG_URL" >&2
    "$@"
    ;;
  *) die "usage: pg.sh start DIR [--watch PID [--remove]] [--fsync] [--tls CERT KEY] | stop DIR | restart DIR | run [--fsync] -- CMD..." ;;
esac

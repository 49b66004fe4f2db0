#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback for a Prefect server (tests, CI, trying it out).
#
#   scripts/postgres.sh install              apt-get install Debian's postgresql unless present
#   scripts/postgres.sh start [DIR] [PORT]   install if needed, initdb DIR/data, start it on
#                                            127.0.0.1:PORT (default: a free port), create the
#                                            role and database "prefect"; prints the
#                                            postgresql+asyncpg://… URL as the last line of stdout
#                                            (DIR defaults to a new /tmp/bananaflow-pg.XXXXXX)
#   scripts/postgres.sh stop DIR [--rm]      stop it cleanly (pg_ctl stop -m fast); --rm deletes DIR
#   scripts/postgres.sh url DIR              print the URL of a started cluster again
#
# Everything but the URL goes to stderr, so `URL=$(scripts/postgres.sh start)` works.
# DIR also gets `url` (the URL) and `env` (a line to source: PREFECT_SERVER_DATABASE_CONNECTION_URL=…).
#
# PostgreSQL refuses to run as root: as root the cluster belongs to the `postgres` system user
# (created by the Debian package) and every server command runs through `runuser -u postgres`.
# As another user the cluster is that user's own. Only TCP 127.0.0.1 and a Unix socket inside
# DIR are listened on; TCP logins need the generated password (scram-sha-256).
#
# The cluster trades durability for speed (fsync=off, synchronous_commit=off,
# full_page_writes=off): fine for a throwaway, NOT for a team's real server (docs/team-server.md).
set -euo pipefail

DB_NAME=prefect
DB_USER=prefect

log() { echo "postgres.sh: $*" >&2; }
die() { log "$*"; exit 1; }

pg_bindir() {
  local dir
  # Newest major version first (Debian installs under /usr/lib/postgresql/<major>/bin).
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
    if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

install() {
  if pg_bindir >/dev/null && command -v psql >/dev/null; then
    log "postgresql already installed ($(pg_bindir))"
    return 0
  fi
  log "installing Debian's postgresql (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  # The package's post-install creates and starts a system cluster on port 5432; this script
  # never uses it (its own clusters run on free ports), so leave the system's service as is.
  as_root apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  pg_bindir >/dev/null || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb"
}

# Run a command as the cluster's owner: `postgres` when we are root, else ourselves.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  local py
  for py in python3 python; do
    if command -v "$py" >/dev/null; then
      "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
      return 0
    fi
  done
  # No Python: a random high port that nothing listens on.
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  die "no free port found"
}

random_password() {
  od -An -tx1 -N16 /dev/urandom | tr -d ' \n'
}

start() {
  local dir="${1:-}" port="${2:-}"
  install
  local bindir
  bindir="$(pg_bindir)"
  if [[ -z "$dir" ]]; then
    dir="$(mktemp -d "${TMPDIR:-/tmp}/bananaflow-pg.XXXXXX")"
  fi
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  [[ -e "$dir/data" ]] && die "$dir/data exists: stop it first (scripts/postgres.sh stop $dir --rm)"
  if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "no 'postgres' system user (is Debian's postgresql installed?)"
    # The postgres user must reach DIR: every parent needs search (x) permission for it.
    local parent="$dir"
    while [[ "$parent" != "/" ]]; do
      parent="$(dirname "$parent")"
      runuser -u postgres -- test -x "$parent" \
        || die "user postgres cannot enter $parent; pick a DIR under /tmp (e.g. leave DIR out)"
    done
    chown postgres:postgres "$dir"
  fi
  chmod 700 "$dir"
  port="${port:-$(free_port)}"
  local password
  password="$(random_password)"

  local pwfile="$dir/.pw"
  (umask 077 && printf '%s\n' "$password" >"$pwfile")
  [[ $(id -u) -eq 0 ]] && chown postgres:postgres "$pwfile"
  log "initdb $dir/data ($("$bindir/postgres" --version))"
  # Superuser "postgres": trust on the Unix socket in DIR only (the owner's own); TCP needs a
  # password. The app role gets its own password below.
  as_owner "$bindir/initdb" -D "$dir/data" -U postgres --pwfile="$pwfile" -E UTF8 \
    --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  rm -f "$pwfile"

  log "starting on 127.0.0.1:$port"
  as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o "\
    -c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir \
    -c max_connections=100 -c shared_buffers=128MB \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >&2 \
    || { tail -n 30 "$dir/server.log" >&2 || true; die "pg_ctl start failed"; }

  as_owner "$bindir/psql" -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
    -c "CREATE ROLE $DB_USER LOGIN PASSWORD '$password'" \
    -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" >&2

  local url="postgresql+asyncpg://$DB_USER:$password@127.0.0.1:$port/$DB_NAME"
  (umask 077 && printf '%s\n' "$url" >"$dir/url" \
    && printf 'PREFECT_SERVER_DATABASE_CONNECTION_URL=%s\n' "$url" >"$dir/env")
  log "ready: database $DB_NAME on 127.0.0.1:$port (cluster $dir; stop: $0 stop $dir --rm)"
  echo "$url"
}

stop() {
  local dir="${1:-}" remove="${2:-}"
  [[ -n "$dir" ]] || die "usage: $0 stop DIR [--rm]"
  [[ -d "$dir" ]] || die "$dir does not exist"
  dir="$(cd "$dir" && pwd)"
  if [[ -f "$dir/data/postmaster.pid" ]]; then
    local bindir
    bindir="$(pg_bindir)" || die "postgresql is not installed"
    log "stopping the cluster in $dir"
    as_owner "$bindir/pg_ctl" -D "$dir/data" -w -t 60 stop -m fast >&2 \
      || as_owner "$bindir/pg_ctl" -D "$dir/data" -w -t 30 stop -m immediate >&2
  else
    log "no server running in $dir"
  fi
  if [[ "$remove" == "--rm" ]]; then
    # Only ever delete what start made: a cluster dir holding data/PG_VERSION.
    if [[ -f "$dir/data/PG_VERSION" || ! -e "$dir/data" ]]; then
      rm -rf "$dir"
      log "removed $dir"
    else
      die "$dir does not look like a cluster made by this script; not removing it"
    fi
  fi
}

case "${1:-}" in
  install) install ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  url) cat "${2:?usage: $0 url DIR}/url" ;;
  *)
    echo "usage: $0 install | start [DIR] [PORT] | stop DIR [--rm] | url DIR" >&2
    exit 2
    ;;
esac

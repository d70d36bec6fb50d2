#!/usr/bin/env bash
# The servers the production tests (mlops_assets_tests/production/) run against, started on loopback:
#
#   - a PostgreSQL cluster "mlops_ci" (Debian's postgresql package, managed with pg_ctlcluster, which
#     runs it as the postgres user), with the roles and databases dagster, mlflow and governance;
#   - an MLflow tracking server (`mlflow server`) on 127.0.0.1:<free port> with that Postgres as its
#     backend store and proxied artifacts under .ci/state/mlartifacts.
#
# It writes their URLs to .ci/services.env (git-ignored, mode 0600), which the tests read.
# Idempotent and fast when everything already runs, so `make test` calls it every time.
#
#   bash .ci/services.sh          start (or check) everything, write .ci/services.env
#   bash .ci/services.sh stop     stop the MLflow server and the cluster (data is kept)
#   bash .ci/services.sh purge    stop, then drop the cluster and .ci/state
#
# This cluster is for tests only: it runs with fsync off (fast, not crash-safe). The production set-up
# (managed Postgres, an MLflow deployment) is described in docs/scaling.md.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${MLOPS_SERVICES_STATE:-$ROOT/.ci/state}"
ENV_FILE="$ROOT/.ci/services.env"
CLUSTER="${MLOPS_PG_CLUSTER:-mlops_ci}"
MLFLOW_BIN="${MLFLOW_BIN:-$ROOT/.venv/bin/mlflow}"
PYTHON="${PYTHON_BIN:-$ROOT/.venv/bin/python}"
ROLES=(mlops dagster mlflow governance)

say() { echo "services: $*" >&2; }
die() { echo "services: error: $*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"
  else die "'$*' needs root (or sudo)"; fi
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}

install_packages() {  # postgresql (required); wrk for the load test (optional: it falls back to Python)
  local missing=()
  command -v pg_ctlcluster >/dev/null && command -v psql >/dev/null || missing+=(postgresql)
  command -v wrk >/dev/null || missing+=(wrk)
  [ ${#missing[@]} -eq 0 ] && return
  say "installing Debian package(s): ${missing[*]}"
  as_root apt-get update -qq || true
  for pkg in "${missing[@]}"; do
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null \
      || [ "$pkg" = wrk ] || die "could not install $pkg"
  done
}

pg_version() {
  ls /usr/lib/postgresql | sort -V | tail -n 1
}

cluster_field() {  # $1: version, $2: column of pg_lsclusters (3 port, 4 status)
  pg_lsclusters -h | awk -v v="$1" -v c="$CLUSTER" -v f="$2" '$1 == v && $2 == c { print $f }'
}

start_postgres() {
  local version port
  version="$(pg_version)"
  [ -n "$version" ] || die "no PostgreSQL server found under /usr/lib/postgresql"
  if [ -z "$(cluster_field "$version" 2)" ]; then
    # Debian's default listen_addresses is 'localhost': loopback only
    say "creating PostgreSQL $version cluster $CLUSTER (tests only: fsync off)"
    as_root pg_createcluster "$version" "$CLUSTER" \
      -o max_connections=200 \
      -o fsync=off -o synchronous_commit=off -o full_page_writes=off >/dev/null
  fi
  if [ "$(cluster_field "$version" 4)" != "online" ]; then
    say "starting cluster $version/$CLUSTER"
    # pg_ctlcluster may print notes (e.g. "Removed stale pid file.") on stdout: keep them off the
    # port this function prints
    as_root pg_ctlcluster "$version" "$CLUSTER" start >&2 \
      || die "cluster $version/$CLUSTER did not start; see /var/log/postgresql/postgresql-$version-$CLUSTER.log"
  fi
  port="$(cluster_field "$version" 3)"
  [[ "$port" =~ ^[0-9]+$ ]] || die "could not read the port of cluster $version/$CLUSTER (got '$port')"
  for _ in $(seq 1 60); do
    if as_postgres psql -p "$port" -Atqc 'SELECT 1' >/dev/null 2>&1; then
      echo "$port"
      return
    fi
    sleep 0.5
  done
  die "PostgreSQL cluster $version/$CLUSTER on port $port does not answer; see /var/log/postgresql/"
}

password() {
  local file="$STATE/pg.password"
  if [ ! -s "$file" ]; then
    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$file")
  fi
  cat "$file"
}

create_roles() {  # $1: port, $2: password
  local port="$1" pw="$2" role
  for role in "${ROLES[@]}"; do
    as_postgres psql -p "$port" -v ON_ERROR_STOP=1 -Atq <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') THEN
    CREATE ROLE $role LOGIN CREATEDB PASSWORD '$pw';
  ELSE
    ALTER ROLE $role LOGIN CREATEDB PASSWORD '$pw';
  END IF;
END \$\$;
SELECT 'CREATE DATABASE $role OWNER $role' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$role')
\\gexec
SQL
  done
}

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

mlflow_healthy() {  # $1: port
  [ -n "$1" ] && curl -sf --max-time 3 "http://127.0.0.1:$1/health" >/dev/null 2>&1
}

start_mlflow() {  # $1: postgres port, $2: password
  local pg_port="$1" pw="$2" port pid
  port="$(cat "$STATE/mlflow.port" 2>/dev/null || true)"
  pid="$(cat "$STATE/mlflow.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && mlflow_healthy "$port"; then
    echo "$port"
    return
  fi
  [ -n "$pid" ] && kill -- "-$pid" 2>/dev/null || true
  [ -x "$MLFLOW_BIN" ] || die "$MLFLOW_BIN not found: run 'make install' first (or set MLFLOW_BIN)"
  port="$(free_port)"
  mkdir -p "$STATE/mlartifacts"
  say "starting mlflow server on 127.0.0.1:$port (backend postgres :$pg_port/mlflow)"
  # the store URI (with its password) goes in the environment, not on the command line (ps); the
  # server's job runner (GenAI scorers, trace roll-ups; not used here) is off: its consumers outlive
  # a stopped server and take CPU from the tests
  MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://mlflow:$pw@127.0.0.1:$pg_port/mlflow" \
  MLFLOW_ARTIFACTS_DESTINATION="$STATE/mlartifacts" \
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
  MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true setsid nohup "$MLFLOW_BIN" server \
    --host 127.0.0.1 --port "$port" --workers 2 \
    >"$STATE/mlflow.log" 2>&1 </dev/null &
  echo $! > "$STATE/mlflow.pid"
  echo "$port" > "$STATE/mlflow.port"
  for _ in $(seq 1 240); do
    if mlflow_healthy "$port"; then
      echo "$port"
      return
    fi
    kill -0 "$(cat "$STATE/mlflow.pid")" 2>/dev/null || break
    sleep 0.5
  done
  tail -n 40 "$STATE/mlflow.log" >&2 || true
  die "mlflow server did not become healthy on port $port (log: $STATE/mlflow.log)"
}

write_env() {  # $1: postgres port, $2: password, $3: mlflow port
  local tmp
  tmp="$(mktemp "$ROOT/.ci/.services.env.XXXXXX")"
  chmod 600 "$tmp"
  cat > "$tmp" <<ENV
# Written by .ci/services.sh; read by mlops_assets_tests/production. Do not commit (git-ignored).
MLOPS_TEST_PG_URL=postgresql+psycopg2://mlops:$2@127.0.0.1:$1/mlops
MLOPS_TEST_DAGSTER_PG_URL=postgresql+psycopg2://dagster:$2@127.0.0.1:$1/dagster
MLOPS_TEST_GOVERNANCE_URL=postgresql+psycopg2://governance:$2@127.0.0.1:$1/governance
MLOPS_TEST_MLFLOW_BACKEND_URL=postgresql+psycopg2://mlflow:$2@127.0.0.1:$1/mlflow
MLOPS_TEST_MLFLOW_URL=http://127.0.0.1:$3
MLOPS_TEST_MLFLOW_ARTIFACTS=$STATE/mlartifacts
ENV
  mv "$tmp" "$ENV_FILE"
}

stop_all() {
  local pid version
  pid="$(cat "$STATE/mlflow.pid" 2>/dev/null || true)"
  if [ -n "$pid" ]; then
    kill -- "-$pid" 2>/dev/null || true
    rm -f "$STATE/mlflow.pid"
  fi
  version="$(pg_version 2>/dev/null || true)"
  if [ -n "$version" ] && [ "$(cluster_field "$version" 4)" = "online" ]; then
    as_root pg_ctlcluster "$version" "$CLUSTER" stop >&2
  fi
  rm -f "$ENV_FILE"
}

main() {
  case "${1:-start}" in
    start) ;;
    stop) stop_all; return ;;
    purge)
      stop_all
      local version; version="$(pg_version 2>/dev/null || true)"
      if [ -n "$version" ] && [ -n "$(cluster_field "$version" 2)" ]; then
        as_root pg_dropcluster "$version" "$CLUSTER"
      fi
      rm -rf "$STATE"
      return ;;
    *) die "unknown command '$1' (start | stop | purge)" ;;
  esac
  mkdir -p "$STATE"
  chmod 700 "$STATE"
  install_packages
  local pg_port pw mlflow_port
  pg_port="$(start_postgres)"
  pw="$(password)"
  create_roles "$pg_port" "$pw"
  mlflow_port="$(start_mlflow "$pg_port" "$pw")"
  write_env "$pg_port" "$pw" "$mlflow_port"
  say "postgres 127.0.0.1:$pg_port, mlflow http://127.0.0.1:$mlflow_port (see $ENV_FILE)"
}

main "$@"

#!/bin/sh
# The sandbox database: PostgreSQL 15 (the Debian binaries), run as user postgres.
# On the first start of an empty volume it creates the cluster (pg_stat_statements
# preloaded), the role and database of POSTGRES_USER / POSTGRES_DB with
# POSTGRES_PASSWORD, and loads /app/seed.sql. Then it runs postgres in the foreground.
set -eu

BIN=/usr/lib/postgresql/15/bin
PGDATA=/var/lib/postgresql/data/pgdata
export PGDATA

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    "$BIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 --pwfile="$pwfile" >/dev/null
    rm -f "$pwfile"
    cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = '*'
unix_socket_directories = '/run/postgresql'
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
max_connections = 100
EOF
    echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
    "$BIN/pg_ctl" -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    psql -v ON_ERROR_STOP=1 -q -U postgres -d postgres \
        -v user="$POSTGRES_USER" -v db="$POSTGRES_DB" -v password="$POSTGRES_PASSWORD" <<'EOF'
CREATE ROLE :"user" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"user";
EOF
    psql -v ON_ERROR_STOP=1 -q -U postgres -d "$POSTGRES_DB" -c 'CREATE EXTENSION pg_stat_statements'
    psql -v ON_ERROR_STOP=1 -q -U "$POSTGRES_USER" -d "$POSTGRES_DB" -f /app/seed.sql
    "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
    echo "db-entrypoint: database $POSTGRES_DB created and seeded"
fi
exec "$BIN/postgres" -D "$PGDATA"

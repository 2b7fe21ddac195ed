#!/bin/sh
# rolling-restart.sh: restart a compose service's replicas one at a time behind nginx.
# Installed by the rolling-restart runbook (templates/rolling-restart.sh, copied as is).
#
# usage: rolling-restart.sh COMPOSE_FILE PROJECT SERVICE UPSTREAM_FILE NGINX_SERVICE NGINX_CONF [DRAIN_SECONDS]
#
# For each replica (container PROJECT_SERVICE_N or PROJECT-SERVICE-N): mark its server
# `down` in UPSTREAM_FILE and reload nginx (drained: no new requests reach it, the ones in
# flight finish), restart the container (gunicorn stops gracefully on TERM), wait until it
# answers /health itself, put the upstream back and reload. Needs 2 replicas at least:
# with one, a restart is an outage, which this script refuses. The upstream file is
# restored however the script ends.
set -eu

compose_file=$1 project=$2 service=$3 upstream=$4 nginx_service=$5 nginx_conf=$6 drain=${7:-2}

compose() {
    if docker compose version >/dev/null 2>&1; then docker compose -f "$compose_file" "$@"
    else docker-compose -f "$compose_file" "$@"; fi
}
reload_nginx() {
    compose exec -T "$nginx_service" nginx -c "$nginx_conf" -q -t
    compose exec -T "$nginx_service" nginx -c "$nginx_conf" -s reload
}

names=$(docker ps --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$service" | awk 'NR > 1 { print $NF }' | sort)
count=$(printf '%s\n' "$names" | grep -c . || true)
if [ "$count" -lt 2 ]; then
    echo "rolling-restart needs at least 2 running replicas of $service (found $count): scale out first (horizontal-scale)" >&2
    exit 1
fi

saved=$(mktemp "$(dirname "$upstream")/.upstream.saved.XXXXXX")
cp -p "$upstream" "$saved"
restore() {
    if ! cmp -s "$saved" "$upstream"; then
        cp -p "$saved" "$upstream.tmp.$$" && mv -f "$upstream.tmp.$$" "$upstream"
        reload_nginx || true
    fi
    rm -f "$saved"
}
trap restore EXIT
trap 'exit 1' INT TERM HUP

for name in $names; do
    echo "== $name: drain"
    awk -v name="$name" '
        $1 == "server" && index($2, name ":") == 1 && $0 !~ / down;/ { sub(/;[[:space:]]*$/, " down;") }
        { print }' "$saved" >"$upstream.tmp.$$"
    mv -f "$upstream.tmp.$$" "$upstream"
    reload_nginx
    sleep "$drain"
    echo "== $name: restart"
    docker restart -t 30 "$name" >/dev/null
    i=0
    until docker exec "$name" python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:5000/health", timeout=2)' >/dev/null 2>&1; do
        i=$((i + 1))
        if [ "$i" -ge 120 ]; then echo "$name does not answer /health after its restart" >&2; exit 1; fi
        sleep 0.5
    done
    echo "== $name: back in the upstream"
    cp -p "$saved" "$upstream.tmp.$$"
    mv -f "$upstream.tmp.$$" "$upstream"
    reload_nginx
    sleep 1
done
echo "restarted $count replicas of $service"

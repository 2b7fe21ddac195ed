# shellcheck shell=bash
# scripts/sandbox.d/multi.sh - the multi-host sandbox (scripts/sandbox CMD --multi): the seeds'
# droplet layout on this machine, four hosts on one private network behind SSH, for the
# runbooks that span hosts (inventory/sandbox-multi.yml).
#
#   lb    10.234.0.10  nginx from Debian, run directly on the host (no docker):
#                      /etc/nginx/nginx.conf includes /etc/nginx/conf.d/app.conf, the upstream
#                      backend_servers of the four web replicas and the server on port 80
#   web1  10.234.0.11  dockerd and the compose project `app` in /srv/app: web-a (port 8001),
#                      web-b (port 8002), worker, and db (PostgreSQL 15 at 10.234.0.11:5432,
#                      seeded: the database of both web hosts, DATABASE_URL in .env.prod)
#   web2  10.234.0.12  dockerd and the project `app`: web-a (8001), web-b (8002), worker
#   db    10.234.0.13  PostgreSQL 15 from Debian on the host (no docker), cluster 15/main:
#                      role app, an empty database app (where migrate-db restores to)
#
# Each host is a network namespace (rbm-lb, rbm-web1, rbm-web2, rbm-db) on the bridge rbmbr0
# (10.234.0.1/24 on this side), with its own mount and UTS namespaces (hostname lb, web1, ...),
# a private /run, /tmp and /srv, and its own sshd on port 22 (root login with the key
# .sandbox/multi/id_ed25519; host keys in .sandbox/multi/known_hosts). lb has a private
# /etc/nginx, /var/log/nginx and /var/lib/nginx; db a private /etc/postgresql,
# /var/lib/postgresql and /var/log/postgresql. The images runbook-sandbox/app:1, :2 and
# :broken are built on web1 and loaded into web2's dockerd; .env in /srv/app sets
# APP_VERSION (the tag compose runs).
#
# Sourced by scripts/sandbox after sandbox.d/host.sh; uses its STATE, APP_DIR, PROJECT,
# install_packages and FIXTURES.

M_STATE="$STATE/multi"
# shellcheck disable=SC2153 # FIXTURES: set by scripts/sandbox
M_FIXTURES="$FIXTURES/multi"
M_BRIDGE=rbmbr0
M_ROOT_V4=10.234.0.1
M_NET=10.234.0.0/24
M_HOSTS=(lb web1 web2 db)
M_WEB_HOSTS=(web1 web2)
declare -A M_ADDR=([lb]=10.234.0.10 [web1]=10.234.0.11 [web2]=10.234.0.12 [db]=10.234.0.13)
M_WEB_PORTS=(8001 8002)
M_IMAGE=runbook-sandbox/app
M_VERSIONS=(1 2 broken)
M_DB_HOST_OF_APP=10.234.0.11 # where DATABASE_URL points first: web1's compose service db
M_PG_VERSION=15
M_OWNER_FILE=/run/rb-sandbox-multi.owner

m_ns() { printf 'rbm-%s\n' "$1"; }
m_veth() { printf 'rbmv-%s\n' "$1"; }
m_dir() { printf '%s/%s\n' "$M_STATE" "$1"; }

m_known_host() {
    local h
    for h in "${M_HOSTS[@]}"; do [ "$h" = "$1" ] && return 0; done
    die "unknown host '$1' (one of: ${M_HOSTS[*]})"
}

# in_mhost HOST CMD...: CMD in HOST's namespaces.
in_mhost() {
    local h="$1"
    shift
    host_sshd_pid "$(m_dir "$h")" >/dev/null || die "host $h of the multi-host sandbox is not up (scripts/sandbox up --multi)"
    in_host_dir "$(m_dir "$h")" "$@"
}

# m_compose HOST ARG...: docker-compose of the project `app` on a web host.
m_compose() {
    local h="$1"
    shift
    compose_in "$(m_dir "$h")" "$APP_DIR" "$PROJECT" "$@"
}

# Which checkout's multi-host sandbox holds the namespaces: one a machine.
m_check_owner() {
    local owner
    owner="$(cat "$M_OWNER_FILE" 2>/dev/null || true)"
    if netns_exists "$(m_ns lb)" && [ -n "$owner" ] && [ "$owner" != "$M_STATE" ] && [ -d "$owner" ]; then
        die "the multi-host sandbox of $owner is up on this machine (one at a time): stop it with its scripts/sandbox down --multi"
    fi
}

# True when every host's sshd runs in its namespace and the bridge is there.
m_hosts_up() {
    local h
    link_exists "$M_BRIDGE" || return 1
    for h in "${M_HOSTS[@]}"; do
        netns_exists "$(m_ns "$h")" && host_sshd_pid "$(m_dir "$h")" >/dev/null || return 1
    done
}

# ---------------------------------------------------------------- hosts

m_make_files() {
    local h d
    mkdir -p "$M_STATE"
    chmod 0700 "$STATE" "$M_STATE"
    gen_key "$M_STATE/id_ed25519" ed25519 "runbook-sandbox-multi"
    cp "$M_STATE/id_ed25519.pub" "$M_STATE/authorized_keys"
    : >"$M_STATE/empty_rc"
    if [ ! -s "$M_STATE/db_password" ]; then
        (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$M_STATE/db_password")
    fi
    for h in "${M_HOSTS[@]}"; do
        d="$(m_dir "$h")"
        mkdir -p "$d/srv/backups"
        write_sshd_config "$d" "$M_STATE/authorized_keys" "$h"
    done
    d="$(m_dir lb)"
    mkdir -p "$d/log/nginx" "$d/lib/nginx"
    if [ ! -f "$d/etc/nginx/nginx.conf" ]; then
        mkdir -p "$d/etc/nginx/conf.d"
        cp /etc/nginx/mime.types "$d/etc/nginx/mime.types"
        cp "$M_FIXTURES/nginx/nginx.conf" "$d/etc/nginx/nginx.conf"
        cp "$M_FIXTURES/nginx/conf.d/app.conf" "$d/etc/nginx/conf.d/app.conf"
    fi
    d="$(m_dir db)"
    mkdir -p "$d/etc/postgresql" "$d/lib/postgresql" "$d/log/postgresql"
    chown postgres:postgres "$d/etc/postgresql" "$d/lib/postgresql" "$d/log/postgresql"
    for h in "${M_WEB_HOSTS[@]}"; do mkdir -p "$(m_dir "$h")/docker"; done
}

# What each host mounts over the machine's directories (SOURCE TARGET pairs).
m_binds() {
    local d
    d="$(m_dir "$1")"
    printf '%s\n' "$d/srv" /srv "$M_STATE/empty_rc" /root/.bashrc
    case "$1" in
        lb) printf '%s\n' "$d/etc/nginx" /etc/nginx "$d/log/nginx" /var/log/nginx "$d/lib/nginx" /var/lib/nginx ;;
        db) printf '%s\n' "$d/etc/postgresql" /etc/postgresql "$d/lib/postgresql" /var/lib/postgresql \
            "$d/log/postgresql" /var/log/postgresql ;;
    esac
}

m_setup_bridge() {
    ip link add "$M_BRIDGE" type bridge
    # Frames between the hosts are switched, never filtered by this machine's iptables (which
    # br_netfilter would otherwise apply to them).
    ip link set "$M_BRIDGE" type bridge nf_call_iptables 0 nf_call_ip6tables 0 nf_call_arptables 0 2>/dev/null || true
    ip addr add "$M_ROOT_V4/24" dev "$M_BRIDGE"
    ip link set "$M_BRIDGE" up
    # quickack: without it small SSH writes meet Nagle + delayed ACK (~40 ms each).
    ip route replace "$M_NET" dev "$M_BRIDGE" proto kernel scope link src "$M_ROOT_V4" quickack 1
}

m_setup_host_network() {
    local h="$1" ns veth addr
    ns="$(m_ns "$h")" veth="$(m_veth "$h")" addr="${M_ADDR[$h]}"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    ip link set "$veth" master "$M_BRIDGE" up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route replace "$M_NET" dev eth0 proto kernel scope link src "$addr" quickack 1
    ip -n "$ns" route replace default via "$M_ROOT_V4" dev eth0
}

m_start_hosts() {
    local h binds
    m_setup_bridge
    for h in "${M_HOSTS[@]}"; do
        m_setup_host_network "$h"
        mapfile -t binds < <(m_binds "$h")
        start_host_sshd "$(m_ns "$h")" "$h" "$(m_dir "$h")" "${M_ADDR[$h]}" "${binds[@]}"
    done
    for h in "${M_HOSTS[@]}"; do host_key_line "${M_ADDR[$h]}" "$(m_dir "$h")"; done >"$M_STATE/known_hosts"
    chmod 0644 "$M_STATE/known_hosts"
    for h in "${M_HOSTS[@]}"; do
        check_ssh_login "$M_STATE/id_ed25519" "$M_STATE/known_hosts" "${M_ADDR[$h]}" "$(m_dir "$h")/sshd.log"
    done
}

# ---------------------------------------------------------------- lb: nginx

# The PID of lb's nginx master, from the pid file in lb's /run.
m_nginx_pid() {
    local spid
    spid="$(host_sshd_pid "$(m_dir lb)")" || return 1
    live_pid "/proc/$spid/root/run/nginx.pid" "nginx: master"
}

m_start_nginx() {
    local d spid i
    d="$(m_dir lb)"
    m_nginx_pid >/dev/null && return 0
    in_mhost lb nginx -t -q 2>"$d/nginx.log" || { show_log "$d/nginx.log"; die "nginx -t failed on lb"; }
    spid="$(host_sshd_pid "$d")"
    (
        close_fds
        exec nsenter -t "$spid" -n -m -u -- nginx
    ) </dev/null >>"$d/nginx.log" 2>&1 || { show_log "$d/nginx.log"; die "nginx did not start on lb"; }
    for ((i = 0; i < 50; i++)); do
        m_nginx_pid >/dev/null && return 0
        sleep 0.1
    done
    show_log "$d/nginx.log"
    die "nginx on lb wrote no pid file"
}

# ---------------------------------------------------------------- db: PostgreSQL on the host

m_pg_pid() {
    local file pid
    file="$(m_dir db)/lib/postgresql/$M_PG_VERSION/main/postmaster.pid"
    pid="$(head -n 1 "$file" 2>/dev/null || true)"
    [ -n "$pid" ] && pid_runs "$pid" "/usr/lib/postgresql/$M_PG_VERSION/bin/postgres" || return 1
    printf '%s\n' "$pid"
}

# The cluster 15/main as Debian's postgresql-common makes it, listening on the private network,
# with the role app (the password of .sandbox/multi/db_password) and an empty database app.
m_start_postgres() {
    local d fresh="" conf spid
    d="$(m_dir db)"
    conf="$d/etc/postgresql/$M_PG_VERSION/main"
    in_mhost db sh -c 'mkdir -p /run/postgresql && chown postgres:postgres /run/postgresql && chmod 2775 /run/postgresql'
    if [ ! -s "$d/lib/postgresql/$M_PG_VERSION/main/PG_VERSION" ]; then
        rm -rf "${conf:?}" "$d/lib/postgresql/$M_PG_VERSION/main"
        in_mhost db pg_createcluster --locale C.UTF-8 -e UTF8 -p 5432 --start-conf manual "$M_PG_VERSION" main \
            >"$d/postgres.log" 2>&1 || { show_log "$d/postgres.log"; die "pg_createcluster failed on db"; }
        cat >"$conf/conf.d/sandbox.conf" <<EOF
# The droplets' private network (10.234.0.0/24) reaches the database.
listen_addresses = '*'
max_connections = 100
EOF
        cat >"$conf/pg_hba.conf" <<'EOF'
# /etc/postgresql/15/main/pg_hba.conf on db
# TYPE  DATABASE        USER            ADDRESS                 METHOD
# On the host: each account as itself, and root as postgres or app (pg_ident.conf).
local   all             all                                     peer map=local
host    all             all             127.0.0.1/32            scram-sha-256
host    all             all             ::1/128                 scram-sha-256
# The droplets' private network: the web hosts, lb, and the controller at 10.234.0.1.
host    all             all             10.234.0.0/24           scram-sha-256
EOF
        cat >"$conf/pg_ident.conf" <<'EOF'
# /etc/postgresql/15/main/pg_ident.conf on db
# MAPNAME       SYSTEM-USERNAME         PG-USERNAME
local           /^(.*)$                 \1
local           root                    postgres
local           root                    app
EOF
        chown postgres:postgres "$conf/conf.d/sandbox.conf" "$conf/pg_hba.conf" "$conf/pg_ident.conf"
        fresh=1
    fi
    if ! m_pg_pid >/dev/null; then
        spid="$(host_sshd_pid "$d")"
        (
            close_fds
            exec nsenter -t "$spid" -n -m -u -- pg_ctlcluster "$M_PG_VERSION" main start
        ) </dev/null >>"$d/postgres.log" 2>&1 || { show_log "$d/postgres.log"; die "PostgreSQL did not start on db"; }
    fi
    if [ -n "$fresh" ]; then
        # The password reaches psql on its stdin, never its command line.
        { printf "CREATE ROLE app LOGIN PASSWORD '%s';\n" "$(cat "$M_STATE/db_password")"
          printf 'CREATE DATABASE app OWNER app;\n'; } |
            in_mhost db runuser -u postgres -- psql -v ON_ERROR_STOP=1 -q -d postgres >>"$d/postgres.log" 2>&1 ||
            { show_log "$d/postgres.log"; die "creating the role and database app failed on db"; }
    fi
}

# ---------------------------------------------------------------- web: docker and compose

# The images of every version on web1 (built when not current), loaded into web2 from there.
m_images() {
    local v missing=()
    for v in "${M_VERSIONS[@]}"; do build_app_image "$(m_dir web1)" "$M_IMAGE:$v" "$v"; done
    for v in "${M_VERSIONS[@]}"; do
        image_current "$(m_dir web2)" "$M_IMAGE:$v" "$v" || missing+=("$M_IMAGE:$v")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    in_mhost web1 docker save "${missing[@]}" | in_mhost web2 docker load -q >/dev/null ||
        die "loading ${missing[*]} into web2 failed"
}

# The app's files on a web host as `up` first writes them: the compose file (web1's with the
# db service), gunicorn.conf.py, .env (APP_VERSION) and .env.prod (the same on both hosts).
m_write_app_files() {
    local h="$1" d password
    d="$(m_dir "$h")/srv/app"
    mkdir -p "$d"
    cp "$M_FIXTURES/docker-compose.prod.yml" "$d/docker-compose.prod.yml"
    if [ "$h" = web1 ]; then cat "$M_FIXTURES/docker-compose.db.yml" >>"$d/docker-compose.prod.yml"; fi
    cp "$FIXTURES/gunicorn.conf.py" "$d/gunicorn.conf.py"
    # shellcheck disable=SC2016 # ${APP_VERSION} is compose's
    printf '# The release running here: the image tag docker-compose.prod.yml runs (runbook-sandbox/app:${APP_VERSION}).\nAPP_VERSION=1\n' >"$d/.env"
    password="$(cat "$M_STATE/db_password")"
    (umask 077 && cat >"$d/.env.prod" <<EOF
# Production settings for the shop app: read by every service (env_file).
POSTGRES_USER=app
POSTGRES_DB=app
POSTGRES_PASSWORD=$password
DATABASE_URL=postgresql://app:$password@$M_DB_HOST_OF_APP:5432/app
EOF
    )
    chmod 0600 "$d/.env.prod"
}

# Starts the web host's project unless every service of it runs.
m_start_project() {
    local h="$1" want have
    [ -f "$(m_dir "$h")/srv/app/docker-compose.prod.yml" ] || m_write_app_files "$h"
    want="$(m_compose "$h" config --services 2>/dev/null | sort | tr '\n' ' ')"
    have="$(m_compose "$h" ps --services --filter status=running 2>/dev/null | sort | tr '\n' ' ')"
    [ -n "$want" ] && [ "$want" = "$have" ] && return 0
    m_compose "$h" up -d --remove-orphans >"$(m_dir "$h")/compose.log" 2>&1 ||
        { show_log "$(m_dir "$h")/compose.log"; die "starting the compose project on $h failed"; }
}

# Waits until every replica answers /health directly and through lb (60 s at most).
m_wait_healthy() {
    local i h p urls=() url pending
    for h in "${M_WEB_HOSTS[@]}"; do
        for p in "${M_WEB_PORTS[@]}"; do urls+=("http://${M_ADDR[$h]}:$p/health"); done
    done
    urls+=("http://${M_ADDR[lb]}/health")
    for ((i = 0; i < 300; i++)); do
        pending=()
        for url in "${urls[@]}"; do
            curl -fsS -m 2 -o /dev/null "$url" 2>/dev/null || pending+=("$url")
        done
        [ "${#pending[@]}" -eq 0 ] && return 0
        urls=("${pending[@]}")
        sleep 0.2
    done
    for h in "${M_WEB_HOSTS[@]}"; do m_compose "$h" ps >&2 || true; done
    die "not healthy within 60 s: ${pending[*]}"
}

# ---------------------------------------------------------------- teardown

m_teardown() {
    local h d
    if host_sshd_pid "$(m_dir db)" >/dev/null && m_pg_pid >/dev/null; then
        timeout 30 nsenter -t "$(host_sshd_pid "$(m_dir db)")" -n -m -u -- \
            pg_ctlcluster "$M_PG_VERSION" main stop -m fast >/dev/null 2>&1 || true
    fi
    for h in "${M_HOSTS[@]}"; do
        d="$(m_dir "$h")"
        stop_host "$d" "$(m_ns "$h")" "$APP_DIR" "$PROJECT"
        if link_exists "$(m_veth "$h")"; then ip link delete "$(m_veth "$h")" 2>/dev/null || true; fi
    done
    if link_exists "$M_BRIDGE"; then ip link delete "$M_BRIDGE" 2>/dev/null || true; fi
}

# ---------------------------------------------------------------- commands

cmd_multi_up() {
    local started h pids=() pid
    need_root
    [ "${RUNBOOK_SANDBOX_DOCKER:-1}" != 0 ] || die "the web hosts run the app with docker compose; RUNBOOK_SANDBOX_DOCKER=0 leaves nothing to start"
    started="$(now_ms)"
    lock_state "$M_STATE/.lock"
    install_packages
    need_commands nginx pg_createcluster pg_ctlcluster runuser
    if m_hosts_up; then
        log "hosts already up"
    else
        m_check_owner
        m_teardown
        m_make_files
        echo "$M_STATE" >"$M_OWNER_FILE"
        m_start_hosts
        log "hosts up: lb web1 web2 db at 10.234.0.10-13 (key $M_STATE/id_ed25519)"
    fi
    # The dockerds start in parallel; nginx and PostgreSQL meanwhile.
    for h in "${M_WEB_HOSTS[@]}"; do
        start_host_dockerd "$(m_dir "$h")" &
        pids+=($!)
    done
    m_start_nginx
    m_start_postgres
    for pid in "${pids[@]}"; do wait "$pid" || die "dockerd did not start"; done
    m_images
    pids=()
    for h in "${M_WEB_HOSTS[@]}"; do
        m_start_project "$h" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || die "a compose project did not start"; done
    m_wait_healthy
    log "timing: up --multi $(elapsed "$started")"
    log "stack up: http://${M_ADDR[lb]}/health; try: runbook exec -i inventory/sandbox-multi.yml all -- hostname"
}

cmd_multi_down() {
    need_root
    lock_state "$M_STATE/.lock"
    m_check_owner
    m_teardown
    rm -f "$M_OWNER_FILE"
    if [ "${1:-}" = --purge ]; then
        rm -rf "$M_STATE"
        log "multi-host sandbox down; state deleted"
    else
        log "multi-host sandbox down (state kept in $M_STATE; --purge deletes it)"
    fi
}

cmd_multi_status() {
    local h d pid p code url
    for h in "${M_HOSTS[@]}"; do
        d="$(m_dir "$h")"
        if pid="$(host_sshd_pid "$d")"; then
            printf '%-5s up (sshd pid %s) root@%s\n' "$h:" "$pid" "${M_ADDR[$h]}"
        else
            printf '%-5s down\n' "$h:"
            continue
        fi
        case "$h" in
            lb)
                if pid="$(m_nginx_pid)"; then echo "      nginx: up (pid $pid)"; else echo "      nginx: down"; fi
                ;;
            db)
                if pid="$(m_pg_pid)"; then echo "      postgresql $M_PG_VERSION/main: up (pid $pid) ${M_ADDR[db]}:5432"; else echo "      postgresql: down"; fi
                ;;
            web*)
                if pid="$(host_dockerd_pid "$d")"; then
                    echo "      dockerd: up (pid $pid)"
                    m_compose "$h" ps 2>/dev/null | sed 's/^/      /' || true
                    for p in "${M_WEB_PORTS[@]}"; do
                        url="http://${M_ADDR[$h]}:$p/health"
                        code="$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$url" 2>/dev/null || true)"
                        echo "      $url: ${code:-000}"
                    done
                else
                    echo "      dockerd: down"
                fi
                ;;
        esac
    done
    url="http://${M_ADDR[lb]}/health"
    if curl -fsS -m 2 -o /dev/null "$url" 2>/dev/null; then echo "health: ok ($url)"; else echo "health: failing ($url)"; fi
}

cmd_multi_env() {
    local h
    cat <<EOF
SANDBOX_MULTI_STATE=$M_STATE
SANDBOX_MULTI_INVENTORY=$REPO_DIR/inventory/sandbox-multi.yml
SANDBOX_MULTI_KEY=$M_STATE/id_ed25519
SANDBOX_MULTI_KNOWN_HOSTS=$M_STATE/known_hosts
SANDBOX_MULTI_URL=http://${M_ADDR[lb]}
SANDBOX_MULTI_APP_DIR=$APP_DIR
SANDBOX_MULTI_PROJECT=$PROJECT
SANDBOX_MULTI_DB_PASSWORD_FILE=$M_STATE/db_password
EOF
    for h in "${M_HOSTS[@]}"; do
        printf 'SANDBOX_MULTI_%s=%s\n' "${h^^}" "${M_ADDR[$h]}"
    done
    for h in "${M_WEB_HOSTS[@]}"; do
        printf 'SANDBOX_MULTI_%s_APP_FILES=%s\n' "${h^^}" "$(m_dir "$h")/srv/app"
    done
    printf 'SANDBOX_MULTI_LB_NGINX_FILES=%s\n' "$(m_dir lb)/etc/nginx"
}

cmd_multi_exec() {
    local h="${1:-}"
    if [ -z "$h" ] || [ "$h" = -- ]; then die "usage: scripts/sandbox exec --multi HOST -- CMD..."; fi
    m_known_host "$h"
    shift
    [ "${1:-}" = -- ] && shift
    [ $# -gt 0 ] || die "usage: scripts/sandbox exec --multi HOST -- CMD..."
    need_root
    in_mhost "$h" "$@"
}

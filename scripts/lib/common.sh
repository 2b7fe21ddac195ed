# shellcheck shell=bash
# scripts/lib/common.sh - the helpers the harness scripts share (testhosts, sandbox, pg-test,
# web-test, docker-test, install-deps): logging, packages, recorded PIDs, daemons' descriptors,
# sshd's runtime directory, locks, the test hosts, usage and command dispatch.
#
# Sourced, never run, right after `set -euo pipefail` and before any `cd` (the path below is
# relative to where the script was started):
#
#   LOG_NAME=web-test
#   . "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
#
# It sets SCRIPT_PATH (the sourcing script, absolute), REPO_DIR (the checkout), SSHD,
# TESTHOSTS (scripts/testhosts), TESTHOSTS_STATE (its state directory) and TESTHOST_NAMES, and
# defines functions; it runs nothing else. Messages go to stderr prefixed with LOG_NAME
# (default: the script's file name); `help` prints USAGE_PARAGRAPHS paragraphs of its header.

SCRIPT_PATH="$(cd "$(dirname "${BASH_SOURCE[1]:-$0}")" && pwd)/$(basename "${BASH_SOURCE[1]:-$0}")"
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LOG_NAME="${LOG_NAME:-$(basename "$SCRIPT_PATH")}"
SSHD=/usr/sbin/sshd

# ---------------------------------------------------------------- messages

log() { printf '%s: %s\n' "$LOG_NAME" "$*" >&2; }
die() { printf '%s: error: %s\n' "$LOG_NAME" "$*" >&2; exit 1; }
need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root"; }

# Milliseconds since the epoch, and the time since such a start as "N ms", for timings.
now_ms() { date +%s%3N; }
elapsed() { echo "$(($(now_ms) - $1)) ms"; }

# show_log FILE [LINES]: FILE (its last LINES lines), indented, on stderr.
show_log() {
    if [ -n "${2:-}" ]; then tail -n "$2" "$1"; else cat "$1"; fi 2>/dev/null | sed 's/^/    /' >&2 || true
}

# The usage: the first USAGE_PARAGRAPHS paragraphs (default 2: the title and the `Usage:` block)
# of the script's header comment, without the comment marks. A bare "#" ends a paragraph.
print_usage() {
    awk -v paragraphs="${USAGE_PARAGRAPHS:-2}" '
        NR == 1 { next }
        !/^#/ { exit }
        /^#$/ { if (++ended >= paragraphs) exit }
        { sub(/^# ?/, ""); print }' "$SCRIPT_PATH"
}

# main of a script: run_command "$@" runs cmd_NAME for the subcommand NAME (reset-app runs
# cmd_reset_app) with the remaining arguments; -h, --help and help print the usage; anything
# else prints it on stderr and exits with status 2.
run_command() {
    local cmd="${1:-}" fn
    [ "$#" -gt 0 ] && shift
    case "$cmd" in
        -h | --help | help) print_usage; return 0 ;;
        "" | *_* | *[!a-z-]*) ;;
        *)
            fn="cmd_${cmd//-/_}"
            if declare -F "$fn" >/dev/null; then
                "$fn" "$@"
                return
            fi
            ;;
    esac
    print_usage >&2
    exit 2
}

# abs_path PATH: PATH made absolute (relative to the current directory), without a trailing /.
abs_path() {
    local p="$1"
    case "$p" in /*) ;; *) p="$PWD/$p" ;; esac
    printf '%s' "${p%/}"
}

# ---------------------------------------------------------------- packages

# True when PACKAGE is installed: "install ok installed" only, since `dpkg -s` also succeeds
# for a removed package whose configuration files remain.
package_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]; }

# missing_packages PACKAGE...: those not installed, one a line.
missing_packages() {
    local p
    for p in "$@"; do package_installed "$p" || printf '%s\n' "$p"; done
}

# ensure_packages PACKAGE...: installs with apt those not installed (as root; no recommended
# packages). Apt's lists are refreshed only when installing without doing so fails. Debian
# starts a package's service when it installs it (nginx on port 80, a PostgreSQL cluster,
# dockerd, sshd on port 22): the scripts run daemons of their own, so a policy-rc.d that
# refuses every start is in place for the install, unless the machine already has one.
ensure_packages() {
    local missing=() p started created_policy="" rc=0
    for p in "$@"; do package_installed "$p" || missing+=("$p"); done
    [ "${#missing[@]}" -gt 0 ] || return 0
    started="$(now_ms)"
    log "installing: ${missing[*]}"
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || rc=$?
    fi
    [ -z "$created_policy" ] || rm -f /usr/sbin/policy-rc.d
    [ "$rc" -eq 0 ] || die "apt-get install ${missing[*]} failed"
    log "timing: apt install $(elapsed "$started")"
}

# need_commands COMMAND...: dies unless every COMMAND is on PATH.
need_commands() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || die "required command '$c' not found"
    done
}

# ---------------------------------------------------------------- processes

# live_pid FILE WORD...: the PID recorded in FILE, if that process is alive (not a zombie) and
# its command line contains every WORD, so that a PID the kernel gave to some other process
# since is never taken for ours.
live_pid() {
    local file="$1" pid cmd word
    shift
    [ -f "$file" ] || return 1
    pid="$({ tr -dc '0-9' <"$file"; } 2>/dev/null || true)"
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
    grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && return 1
    cmd="$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null || true)"
    for word in "$@"; do [[ "$cmd" == *"$word"* ]] || return 1; done
    printf '%s\n' "$pid"
}

# True when PID runs the executable EXE.
pid_runs() { [ "$(readlink "/proc/$1/exe" 2>/dev/null || true)" = "$2" ]; }

# wait_exec PID EXE SECONDS: waits until PID runs EXE (the chain of execs that starts a daemon
# has reached it); false when PID exits first, or after SECONDS.
wait_exec() {
    local pid="$1" exe="$2" i
    for ((i = 0; i < $3 * 50; i++)); do
        [ -d "/proc/$pid" ] || return 1
        pid_runs "$pid" "$exe" && return 0
        sleep 0.02
    done
    return 1
}

# stop_pids WAIT PID...: TERM to the PIDs, up to WAIT seconds for them to go (a zombie counts
# as gone), then KILL to what is left.
stop_pids() {
    local wait="$1" pids alive i p
    shift
    pids=("$@")
    [ "${#pids[@]}" -gt 0 ] || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for ((i = 0; i < wait * 10; i++)); do
        alive=()
        for p in "${pids[@]}"; do
            if [ -d "/proc/$p" ] && ! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null; then alive+=("$p"); fi
        done
        [ "${#alive[@]}" -eq 0 ] && return 0
        sleep 0.1
    done
    log "killing what did not stop within ${wait} s: ${alive[*]}"
    kill -KILL "${alive[@]}" 2>/dev/null || true
    sleep 0.2
}

# Closes every descriptor above 2 (but bash's own 255, which is close-on-exec) in the subshell
# that then execs a daemon: a daemon must hold neither our lock nor our caller's pipes (a test
# harness waiting for the end of this script's output would wait for the daemon too:
# Foundation's Process on Linux does).
close_fds() {
    local fd
    for fd in /proc/self/fd/*; do
        fd="${fd##*/}"
        if [ "$fd" -gt 2 ] && [ "$fd" -ne 255 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
}

# lock_state FILE: an exclusive lock on FILE, held on descriptor 9 until the script exits
# (or closes it). Nothing that outlives the script may inherit descriptor 9.
lock_state() {
    mkdir -p "$(dirname "$1")"
    exec 9>"$1"
    flock 9
}

# ---------------------------------------------------------------- network and sshd

netns_exists() { [ -e "/run/netns/$1" ]; }
link_exists() { ip link show dev "$1" >/dev/null 2>&1; }

# tcp_open ADDR PORT [SECONDS [COMMAND...]]: true when a TCP connection to ADDR:PORT opens
# within SECONDS (default 2); COMMAND (e.g. `ip netns exec NS`) runs the attempt.
# shellcheck disable=SC2016 # $0 and $1 belong to the inner bash
tcp_open() {
    local addr="$1" port="$2" t="${3:-2}"
    shift "$(($# < 3 ? $# : 3))"
    "$@" timeout "$t" bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$addr" "$port" 2>/dev/null
}

# sshd, and `sshd -t` too, refuse to run without the privilege separation directory
# /run/sshd, which only the openssh-server service makes when it starts: a machine where that
# service never ran has none. (/run/netns is made by `ip netns add`.)
ensure_sshd_dirs() {
    mkdir -p /run/sshd
    chmod 0755 /run/sshd
}

# live_sshd_pid PIDFILE CONFIG: the PID recorded in PIDFILE, if that process is sshd itself
# (not a command on the way to exec it) running with CONFIG.
live_sshd_pid() {
    local pid
    pid="$(live_pid "$1" "$SSHD" "$2")" && pid_runs "$pid" "$SSHD" || return 1
    printf '%s\n' "$pid"
}

# check_sshd_config FILE: `sshd -t` of FILE, with what it needs in place.
check_sshd_config() {
    ensure_sshd_dirs
    "$SSHD" -t -f "$1" || die "invalid sshd config: $1"
}

# gen_key PATH TYPE COMMENT [BITS [PASSPHRASE]]: an SSH key pair at PATH and PATH.pub, unless
# both are there already.
gen_key() {
    local path="$1" type="$2" comment="$3" bits="${4:-}" pass="${5:-}"
    [ -f "$path" ] && [ -f "$path.pub" ] && return 0
    rm -f "$path" "$path.pub"
    ssh-keygen -q -t "$type" ${bits:+-b "$bits"} -N "$pass" -C "$comment" -f "$path"
    chmod 0600 "$path"
    chmod 0644 "$path.pub"
}

# The machine's cgroup hierarchies under /sys/fs/cgroup, one "TARGET FSTYPE OPTIONS" line each
# ("-": no options), OPTIONS as `mount -o` takes them to mount the same hierarchy again (which
# shares it): dockerd needs them in the fresh /sys of a network namespace.
cgroup_mounts() {
    local target fstype options opts o
    while read -r target fstype options; do
        [ -n "$target" ] || continue
        case "$fstype" in
            tmpfs) opts=mode=755 ;;
            cgroup | cgroup2)
                opts=""
                for o in ${options//,/ }; do
                    case "$o" in rw | ro | relatime | noatime | nosuid | nodev | noexec | seclabel) ;; *) opts="$opts,$o" ;; esac
                done
                opts="${opts#,}"
                case "$fstype,$opts" in cgroup,name=* | cgroup,) opts="none${opts:+,$opts}" ;; esac
                ;;
            *) continue ;;
        esac
        printf '%s %s %s\n' "$target" "$fstype" "${opts:--}"
    done < <(findmnt -rn -R -o TARGET,FSTYPE,OPTIONS /sys/fs/cgroup 2>/dev/null || true)
}

# ---------------------------------------------------------------- the test hosts

# scripts/testhosts, its state directory (${RUNBOOK_TESTHOSTS:-<repo>/.testhosts}) and hosts.
TESTHOSTS="$REPO_DIR/scripts/testhosts"
TESTHOSTS_STATE="$(abs_path "${RUNBOOK_TESTHOSTS:-$REPO_DIR/.testhosts}")"
TESTHOST_NAMES=(h1 h2 h3 inner)

is_testhost() {
    local h
    for h in "${TESTHOST_NAMES[@]}"; do [ "$h" = "$1" ] && return 0; done
    return 1
}

# The PID of HOST's sshd (its namespaces are the host), if that process is still the sshd
# scripts/testhosts started with HOST's config.
testhost_sshd_pid() { live_sshd_pid "$TESTHOSTS_STATE/$1/sshd.pid" "$TESTHOSTS_STATE/$1/sshd_config"; }

# Dies unless HOST is one of the test hosts and is running.
require_testhost() {
    is_testhost "$1" || die "unknown host '$1' (one of: ${TESTHOST_NAMES[*]})"
    testhost_sshd_pid "$1" >/dev/null || die "test host $1 is not running (run: $TESTHOSTS up)"
}

/*
 * libssh2-loop: the floor for "N trivial commands over SSH".
 *
 * A bare, blocking libssh2 client with nothing on top: connect (TCP_NODELAY),
 * handshake, host key checked against known_hosts (refused unless it matches),
 * public key authentication from a file, then N_COMMANDS sequential commands,
 * each on a new exec channel with stdout and stderr read to EOF and the exit
 * status collected, then disconnect. Timings are printed as one JSON line.
 *
 * Usage:
 *   libssh2-loop HOST PORT USER KEYFILE KNOWN_HOSTS N_COMMANDS [HOST...]
 *
 * Extra HOST arguments (same port, user and key; HOST may be HOST:PORT or
 * [V6]:PORT) are run in parallel, one pthread and one session per host, and
 * the JSON then has one entry per host plus the wall time of the whole run.
 *
 * The command defaults to `true`; LOOP_COMMAND in the environment overrides it.
 * LOOP_USERAUTH_LIST=1 asks for the server's authentication methods
 * (libssh2_userauth_list, an SSH "none" request) before authenticating, as
 * Sources/SSH does, to measure what that round trip costs.
 * LOOP_SAMPLES=1 adds every command's time to the JSON ("cmd_ms").
 *
 * Build:
 *   cc -O2 -o bench/.out/libssh2-loop bench/libssh2-loop.c \
 *      $(pkg-config --cflags --libs libssh2) -lpthread
 */
#define _GNU_SOURCE
#include <libssh2.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array (p in 0..100). */
static double percentile(const double *sorted, int n, double p) {
    if (n <= 0) return 0;
    if (p == 50.0) { /* the median: mean of the middle two for even n */
        return n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }
    int rank = (int)((p / 100.0) * n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return sorted[rank - 1];
}

struct job {
    /* inputs */
    char host[256];
    int port;
    const char *user, *keyfile, *known_hosts, *command;
    int n_commands;
    /* outputs */
    double connect_ms, auth_ms, close_ms, total_ms;
    double *cmd_ms;
    int failed_status; /* commands that exited non-zero */
    char error[512];
};

static int fail(struct job *j, LIBSSH2_SESSION *s, const char *what) {
    char *msg = NULL;
    if (s) libssh2_session_last_error(s, &msg, NULL, 0);
    snprintf(j->error, sizeof j->error, "%s%s%s", what, msg ? ": " : "", msg ? msg : "");
    return -1;
}

static int tcp_connect(struct job *j) {
    struct addrinfo hints, *list = NULL, *ai;
    char port[16];
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_family = AF_UNSPEC;
    snprintf(port, sizeof port, "%d", j->port);
    int rc = getaddrinfo(j->host, port, &hints, &list);
    if (rc != 0) {
        snprintf(j->error, sizeof j->error, "cannot resolve %s: %s", j->host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (ai = list; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
        close(fd);
        fd = -1;
    }
    if (fd < 0) snprintf(j->error, sizeof j->error, "cannot connect to %s:%d: %s", j->host, j->port, strerror(errno));
    freeaddrinfo(list);
    return fd;
}

static int knownhost_keytype(int hostkey_type) {
    switch (hostkey_type) {
    case LIBSSH2_HOSTKEY_TYPE_RSA: return LIBSSH2_KNOWNHOST_KEY_SSHRSA;
    case LIBSSH2_HOSTKEY_TYPE_DSS: return LIBSSH2_KNOWNHOST_KEY_SSHDSS;
#ifdef LIBSSH2_HOSTKEY_TYPE_ECDSA_256
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_256: return LIBSSH2_KNOWNHOST_KEY_ECDSA_256;
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_384: return LIBSSH2_KNOWNHOST_KEY_ECDSA_384;
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_521: return LIBSSH2_KNOWNHOST_KEY_ECDSA_521;
#endif
#ifdef LIBSSH2_HOSTKEY_TYPE_ED25519
    case LIBSSH2_HOSTKEY_TYPE_ED25519: return LIBSSH2_KNOWNHOST_KEY_ED25519;
#endif
    default: return LIBSSH2_KNOWNHOST_KEY_UNKNOWN;
    }
}

static int check_host_key(struct job *j, LIBSSH2_SESSION *s) {
    size_t len = 0;
    int type = 0;
    const char *key = libssh2_session_hostkey(s, &len, &type);
    if (!key) return fail(j, s, "no host key");
    LIBSSH2_KNOWNHOSTS *kh = libssh2_knownhost_init(s);
    if (!kh) return fail(j, s, "knownhost_init");
    if (libssh2_knownhost_readfile(kh, j->known_hosts, LIBSSH2_KNOWNHOST_FILE_OPENSSH) < 0) {
        libssh2_knownhost_free(kh);
        return fail(j, s, "cannot read known_hosts");
    }
    struct libssh2_knownhost *found = NULL;
    int check = libssh2_knownhost_checkp(kh, j->host, j->port, key, len,
                                         LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW |
                                             knownhost_keytype(type),
                                         &found);
    libssh2_knownhost_free(kh);
    switch (check) {
    case LIBSSH2_KNOWNHOST_CHECK_MATCH: return 0;
    case LIBSSH2_KNOWNHOST_CHECK_MISMATCH:
        snprintf(j->error, sizeof j->error, "HOST KEY MISMATCH for %s:%d; refusing", j->host, j->port);
        return -1;
    case LIBSSH2_KNOWNHOST_CHECK_NOTFOUND:
        snprintf(j->error, sizeof j->error, "host key for %s:%d not in %s; refusing", j->host, j->port, j->known_hosts);
        return -1;
    default: return fail(j, s, "known_hosts check failed");
    }
}

/* Runs one command on a fresh exec channel; returns its exit status or -1. */
static int run_command(struct job *j, LIBSSH2_SESSION *s) {
    static char buf[32768];
    LIBSSH2_CHANNEL *ch = libssh2_channel_open_session(s);
    if (!ch) return fail(j, s, "channel_open_session");
    if (libssh2_channel_exec(ch, j->command) != 0) {
        libssh2_channel_free(ch);
        return fail(j, s, "channel_exec");
    }
    /* Blocking reads: stdout to EOF, then whatever stderr holds. Fine for
       commands with little output (libssh2 queues the other stream). */
    for (int stream = 0; stream <= 1; stream++) {
        for (;;) {
            ssize_t n = libssh2_channel_read_ex(ch, stream, buf, sizeof buf);
            if (n > 0) continue;
            if (n == 0) break;
            libssh2_channel_free(ch);
            return fail(j, s, "channel_read");
        }
    }
    libssh2_channel_close(ch);
    libssh2_channel_wait_closed(ch);
    int status = libssh2_channel_get_exit_status(ch);
    libssh2_channel_free(ch);
    return status;
}

static void *run_job(void *arg) {
    struct job *j = arg;
    double t0 = now_ms();
    int fd = tcp_connect(j);
    if (fd < 0) return NULL;
    LIBSSH2_SESSION *s = libssh2_session_init();
    if (!s) {
        fail(j, NULL, "session_init");
        close(fd);
        return NULL;
    }
    libssh2_session_set_blocking(s, 1);
    /* Prefer the key types known_hosts holds for the test hosts (as OpenSSH does). */
    libssh2_session_method_pref(s, LIBSSH2_METHOD_HOSTKEY,
                                "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,"
                                "rsa-sha2-512,rsa-sha2-256,ssh-rsa");
    if (libssh2_session_handshake(s, fd) != 0) {
        fail(j, s, "handshake");
        goto out;
    }
    if (check_host_key(j, s) != 0) goto out;
    j->connect_ms = now_ms() - t0;
    double ta = now_ms();
    const char *list_first = getenv("LOOP_USERAUTH_LIST");
    if (list_first && strcmp(list_first, "1") == 0 &&
        !libssh2_userauth_list(s, j->user, (unsigned int)strlen(j->user)) && !libssh2_userauth_authenticated(s)) {
        fail(j, s, "userauth_list");
        goto out;
    }
    if (libssh2_userauth_publickey_fromfile(s, j->user, NULL, j->keyfile, NULL) != 0) {
        fail(j, s, "publickey authentication");
        goto out;
    }
    j->auth_ms = now_ms() - ta;
    for (int i = 0; i < j->n_commands; i++) {
        double tc = now_ms();
        int status = run_command(j, s);
        j->cmd_ms[i] = now_ms() - tc;
        if (status < 0 && j->error[0]) goto out;
        if (status != 0) j->failed_status++;
    }
    double tq = now_ms();
    libssh2_session_disconnect(s, "done");
    libssh2_session_free(s);
    s = NULL;
    close(fd);
    fd = -1;
    j->close_ms = now_ms() - tq;
    j->total_ms = now_ms() - t0;
out:
    if (s) {
        libssh2_session_disconnect(s, "error");
        libssh2_session_free(s);
    }
    if (fd >= 0) close(fd);
    return NULL;
}

static void parse_host(const char *arg, int default_port, char *host, size_t size, int *port) {
    *port = default_port;
    const char *colon = strrchr(arg, ':');
    if (arg[0] == '[') {
        const char *end = strchr(arg, ']');
        size_t len = end ? (size_t)(end - arg - 1) : strlen(arg + 1);
        snprintf(host, size, "%.*s", (int)len, arg + 1);
        if (end && end[1] == ':') *port = atoi(end + 2);
    } else if (colon && strchr(arg, ':') == colon) { /* exactly one colon: HOST:PORT */
        snprintf(host, size, "%.*s", (int)(colon - arg), arg);
        *port = atoi(colon + 1);
    } else {
        snprintf(host, size, "%s", arg);
    }
}

static void json_string(const char *text) {
    putchar('"');
    for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
        if (*c == '"' || *c == '\\') printf("\\%c", *c);
        else if (*c < 0x20) printf("\\u%04x", *c);
        else putchar(*c);
    }
    putchar('"');
}

/* The fields of one host's run, without the surrounding braces. */
static void print_job_fields(const struct job *j, int n) {
    double *sorted = malloc(sizeof(double) * (n > 0 ? n : 1));
    memcpy(sorted, j->cmd_ms, sizeof(double) * n);
    qsort(sorted, n, sizeof(double), cmp_double);
    printf("\"host\":\"%s\",\"port\":%d,\"ok\":%s,\"connect_ms\":%.3f,\"auth_ms\":%.3f,"
           "\"connect_auth_ms\":%.3f,\"cmd_median_ms\":%.3f,\"cmd_p95_ms\":%.3f,\"cmd_min_ms\":%.3f,"
           "\"cmd_max_ms\":%.3f,\"close_ms\":%.3f,\"total_ms\":%.3f,\"nonzero_exits\":%d",
           j->host, j->port, j->error[0] ? "false" : "true", j->connect_ms, j->auth_ms, j->connect_ms + j->auth_ms,
           percentile(sorted, n, 50), percentile(sorted, n, 95), n ? sorted[0] : 0, n ? sorted[n - 1] : 0,
           j->close_ms, j->total_ms, j->failed_status);
    const char *samples = getenv("LOOP_SAMPLES");
    if (samples && strcmp(samples, "1") == 0) {
        printf(",\"cmd_ms\":[");
        for (int i = 0; i < n; i++) printf(i ? ",%.3f" : "%.3f", j->cmd_ms[i]);
        putchar(']');
    }
    if (j->error[0]) {
        printf(",\"error\":");
        json_string(j->error);
    }
    free(sorted);
}

int main(int argc, char **argv) {
    double t_start = now_ms();
    if (argc < 7) {
        fprintf(stderr, "usage: %s HOST PORT USER KEYFILE KNOWN_HOSTS N_COMMANDS [HOST...]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[2]);
    int n = atoi(argv[6]);
    if (n < 0) n = 0;
    const char *command = getenv("LOOP_COMMAND");
    if (!command || !*command) command = "true";
    int n_hosts = 1 + (argc - 7);

    if (libssh2_init(0) != 0) {
        fprintf(stderr, "libssh2_init failed\n");
        return 1;
    }
    struct job *jobs = calloc(n_hosts, sizeof *jobs);
    for (int h = 0; h < n_hosts; h++) {
        struct job *j = &jobs[h];
        parse_host(h == 0 ? argv[1] : argv[6 + h], port, j->host, sizeof j->host, &j->port);
        j->user = argv[3];
        j->keyfile = argv[4];
        j->known_hosts = argv[5];
        j->command = command;
        j->n_commands = n;
        j->cmd_ms = calloc(n > 0 ? n : 1, sizeof(double));
    }

    if (n_hosts == 1) {
        run_job(&jobs[0]);
    } else {
        pthread_t *threads = calloc(n_hosts, sizeof *threads);
        for (int h = 0; h < n_hosts; h++) pthread_create(&threads[h], NULL, run_job, &jobs[h]);
        for (int h = 0; h < n_hosts; h++) pthread_join(threads[h], NULL);
        free(threads);
    }
    libssh2_exit();
    double wall = now_ms() - t_start;

    int ok = 1;
    for (int h = 0; h < n_hosts; h++)
        if (jobs[h].error[0]) ok = 0;

    printf("{\"tool\":\"libssh2-loop\",\"libssh2\":\"%s\",\"command\":", libssh2_version(0));
    json_string(command);
    printf(",\"hosts\":%d,\"commands\":%d,\"wall_ms\":%.3f,", n_hosts, n, wall);
    if (n_hosts == 1) {
        /* One host: its fields at top level. */
        print_job_fields(&jobs[0], n);
    } else {
        printf("\"per_host\":[");
        for (int h = 0; h < n_hosts; h++) {
            printf(h ? ",{" : "{");
            print_job_fields(&jobs[h], n);
            putchar('}');
        }
        putchar(']');
    }
    printf("}\n");
    for (int h = 0; h < n_hosts; h++) {
        if (jobs[h].error[0]) fprintf(stderr, "libssh2-loop: %s:%d: %s\n", jobs[h].host, jobs[h].port, jobs[h].error);
        free(jobs[h].cmd_ms);
    }
    free(jobs);
    return ok ? 0 : 1;
}

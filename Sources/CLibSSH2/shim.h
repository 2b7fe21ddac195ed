#ifndef RUNBOOK_CLIBSSH2_SHIM_H
#define RUNBOOK_CLIBSSH2_SHIM_H

#include <sys/prctl.h>

#include <libssh2.h>
#include <libssh2_sftp.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* libssh2 exposes much of its API as function-like macros, which Swift cannot see.
   These static inline wrappers give them names Swift can call. */

/* Names the calling thread (at most 15 bytes show) for ps, top -H and perf. */
static inline void rb_name_this_thread(const char *name) {
    (void)prctl(PR_SET_NAME, name, 0, 0, 0);
}

static inline LIBSSH2_SESSION *rb_session_init(void) {
    return libssh2_session_init_ex(NULL, NULL, NULL, NULL);
}

/* A session's read deadline (CLOCK_MONOTONIC nanoseconds; 0: none). libssh2 reads the banner
   and key exchange in loops that return only when the socket has nothing to read, so a peer
   that floods bytes would keep the event loop inside one call forever. The session's receive
   callback fails every read once the deadline has passed, which ends such a loop. */
typedef struct { long long deadline_ns; int expired; } rb_session_guard;

static inline long long rb_monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

static ssize_t rb_guarded_recv(libssh2_socket_t fd, void *buffer, size_t length, int flags, void **abstract) {
    rb_session_guard *guard = abstract ? (rb_session_guard *)*abstract : NULL;
    if (guard && guard->deadline_ns && rb_monotonic_ns() > guard->deadline_ns) {
        guard->expired = 1;
        return -ETIMEDOUT;
    }
    ssize_t n = recv(fd, buffer, length, flags);
    if (n < 0) return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return n;
}

/* A session whose reads fail after a deadline set with rb_session_set_deadline. */
static inline LIBSSH2_SESSION *rb_session_init_guarded(void) {
    rb_session_guard *guard = calloc(1, sizeof(rb_session_guard));
    if (!guard) return NULL;
    LIBSSH2_SESSION *session = libssh2_session_init_ex(NULL, NULL, NULL, guard);
    if (!session) { free(guard); return NULL; }
    libssh2_session_callback_set(session, LIBSSH2_CALLBACK_RECV, (void *)rb_guarded_recv);
    return session;
}

/* Reads fail from `milliseconds` from now on; 0 removes the deadline. */
static inline void rb_session_set_deadline(LIBSSH2_SESSION *session, long long milliseconds) {
    rb_session_guard *guard = (rb_session_guard *)*libssh2_session_abstract(session);
    if (guard) guard->deadline_ns = milliseconds > 0 ? rb_monotonic_ns() + milliseconds * 1000000LL : 0;
}

/* Whether a read failed because the deadline had passed. */
static inline int rb_session_deadline_expired(LIBSSH2_SESSION *session) {
    rb_session_guard *guard = (rb_session_guard *)*libssh2_session_abstract(session);
    return guard ? guard->expired : 0;
}

/* libssh2_session_free, and the guard of a session made by rb_session_init_guarded. */
static inline int rb_session_free(LIBSSH2_SESSION *session) {
    void *guard = *libssh2_session_abstract(session);
    int rc = libssh2_session_free(session);
    if (rc != LIBSSH2_ERROR_EAGAIN) free(guard);
    return rc;
}

static inline LIBSSH2_CHANNEL *rb_channel_open_session(LIBSSH2_SESSION *session) {
    return libssh2_channel_open_ex(session, "session", sizeof("session") - 1,
                                   LIBSSH2_CHANNEL_WINDOW_DEFAULT,
                                   LIBSSH2_CHANNEL_PACKET_DEFAULT, NULL, 0);
}

static inline int rb_channel_exec(LIBSSH2_CHANNEL *channel, const char *command, unsigned int length) {
    return libssh2_channel_process_startup(channel, "exec", sizeof("exec") - 1, command, length);
}

static inline LIBSSH2_CHANNEL *rb_channel_direct_tcpip(LIBSSH2_SESSION *session, const char *host, int port) {
    return libssh2_channel_direct_tcpip_ex(session, host, port, "127.0.0.1", 22);
}

static inline LIBSSH2_SFTP_HANDLE *rb_sftp_open(LIBSSH2_SFTP *sftp, const char *path, unsigned int length,
                                               unsigned long flags, long mode) {
    return libssh2_sftp_open_ex(sftp, path, length, flags, mode, LIBSSH2_SFTP_OPENFILE);
}

static inline int rb_sftp_stat(LIBSSH2_SFTP *sftp, const char *path, unsigned int length,
                               LIBSSH2_SFTP_ATTRIBUTES *attrs) {
    return libssh2_sftp_stat_ex(sftp, path, length, LIBSSH2_SFTP_STAT, attrs);
}

static inline int rb_sftp_lstat(LIBSSH2_SFTP *sftp, const char *path, unsigned int length,
                                LIBSSH2_SFTP_ATTRIBUTES *attrs) {
    return libssh2_sftp_stat_ex(sftp, path, length, LIBSSH2_SFTP_LSTAT, attrs);
}

static inline int rb_sftp_realpath(LIBSSH2_SFTP *sftp, const char *path, unsigned int length,
                                   char *target, unsigned int target_length) {
    return libssh2_sftp_symlink_ex(sftp, path, length, target, target_length, LIBSSH2_SFTP_REALPATH);
}

static inline int rb_sftp_setstat(LIBSSH2_SFTP *sftp, const char *path, unsigned int length,
                                  LIBSSH2_SFTP_ATTRIBUTES *attrs) {
    return libssh2_sftp_stat_ex(sftp, path, length, LIBSSH2_SFTP_SETSTAT, attrs);
}

static inline int rb_sftp_unlink(LIBSSH2_SFTP *sftp, const char *path, unsigned int length) {
    return libssh2_sftp_unlink_ex(sftp, path, length);
}

static inline int rb_sftp_close(LIBSSH2_SFTP_HANDLE *handle) {
    return libssh2_sftp_close_handle(handle);
}

static inline int rb_userauth_publickey_fromfile(LIBSSH2_SESSION *session, const char *user,
                                                 const char *publickey, const char *privatekey,
                                                 const char *passphrase) {
    return libssh2_userauth_publickey_fromfile_ex(session, user, (unsigned int)strlen(user),
                                                  publickey, privatekey, passphrase);
}

static inline int rb_userauth_password(LIBSSH2_SESSION *session, const char *user, const char *password) {
    return libssh2_userauth_password_ex(session, user, (unsigned int)strlen(user),
                                        password, (unsigned int)strlen(password), NULL);
}

static inline int rb_session_disconnect(LIBSSH2_SESSION *session, const char *description) {
    return libssh2_session_disconnect_ex(session, SSH_DISCONNECT_BY_APPLICATION, description, "");
}

static const int RB_ERROR_EAGAIN = LIBSSH2_ERROR_EAGAIN;
static const int RB_BLOCK_INBOUND = LIBSSH2_SESSION_BLOCK_INBOUND;
static const int RB_BLOCK_OUTBOUND = LIBSSH2_SESSION_BLOCK_OUTBOUND;
static const unsigned long RB_FXF_READ = LIBSSH2_FXF_READ;
static const unsigned long RB_FXF_WRITE = LIBSSH2_FXF_WRITE;
static const unsigned long RB_FXF_CREAT = LIBSSH2_FXF_CREAT;
static const unsigned long RB_FXF_TRUNC = LIBSSH2_FXF_TRUNC;
static const unsigned long RB_FXF_EXCL = LIBSSH2_FXF_EXCL;
static const unsigned long RB_FX_NO_SUCH_FILE = LIBSSH2_FX_NO_SUCH_FILE;
static const unsigned long RB_SFTP_ATTR_PERMISSIONS = LIBSSH2_SFTP_ATTR_PERMISSIONS;
static const unsigned long RB_SFTP_ATTR_SIZE = LIBSSH2_SFTP_ATTR_SIZE;
static const unsigned long RB_SFTP_ATTR_UIDGID = LIBSSH2_SFTP_ATTR_UIDGID;
static const unsigned long RB_SFTP_ATTR_ACMODTIME = LIBSSH2_SFTP_ATTR_ACMODTIME;

#endif

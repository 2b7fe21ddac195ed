#ifndef RUNBOOK_CSQLITE_SHIM_H
#define RUNBOOK_CSQLITE_SHIM_H

#include <sqlite3.h>

/* sqlite3_db_config is variadic, which Swift cannot call. */

/* The last connection to close a WAL database normally checkpoints it and deletes the
   -wal and -shm files (two fsyncs and two unlinks, every run). Off: the WAL stays and is
   checkpointed by SQLite's automatic checkpoints as commits go on. Returns SQLITE_OK. */
static inline int rb_sqlite_no_checkpoint_on_close(sqlite3 *db) {
    return sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, (int *)0);
}

#endif

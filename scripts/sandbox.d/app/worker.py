"""The sandbox's queue worker: the role Celery plays in the seeds' stack.

Each replica registers itself in the `worker` table (name = container hostname) and
refreshes its heartbeat every 2 s while idle (with every job while busy); it takes jobs
(20 ms of work each, one after another while there are any) from the `job` table with
FOR UPDATE SKIP LOCKED, so any number of replicas share the queue. On SIGTERM it
removes its row and exits, so `SELECT count(*) FROM worker` is the number running.
"""

import os
import signal
import socket
import sys
import time

import psycopg2

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://app@db/app")
NAME = socket.gethostname()
running = True


def stop(_signum, _frame):
    global running
    running = False


def main():
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    conn = None
    while running:
        try:
            if conn is None:
                conn = psycopg2.connect(DATABASE_URL, connect_timeout=2, application_name="worker")
                conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO worker (name, pid, seen) VALUES (%s, %s, now()) "
                    "ON CONFLICT (name) DO UPDATE SET pid = EXCLUDED.pid, seen = now()",
                    (NAME, os.getpid()),
                )
                cur.execute(
                    "UPDATE job SET done_by = %s, done_at = now() WHERE id = ("
                    " SELECT id FROM job WHERE done_at IS NULL ORDER BY id"
                    " FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id",
                    (NAME,),
                )
                took = cur.fetchone() is not None
        except psycopg2.Error as error:
            print(f"worker {NAME}: {error}", file=sys.stderr, flush=True)
            conn = None
            took = False
        if took:
            # A job takes a moment of work; the next one is taken at once.
            time.sleep(0.02)
            continue
        for _ in range(20):
            if not running:
                break
            time.sleep(0.1)
    if conn is not None:
        try:
            with conn.cursor() as cur:
                cur.execute("DELETE FROM worker WHERE name = %s", (NAME,))
        except psycopg2.Error:
            pass


if __name__ == "__main__":
    main()

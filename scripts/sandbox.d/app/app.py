"""The sandbox's web application: a small WSGI app served by gunicorn.

It stands in for the seeds' Flask/FastAPI service: it talks to PostgreSQL, answers a
health check, and tells who answered so tests can see every replica and its worker count.

Its version is baked into the image (/app/VERSION: 1, 2 or broken) and every response
carries it in the header X-App-Version. Version `broken` starts like the others but answers
500 on every path, /health included (a bad release for rollouts to catch).

  /health         200 "ok" when the database answers `SELECT 1` (within 2 s), else 503; also
                  503 while /tmp/unhealthy exists in the container (how tests break one replica)
  /whoami         "<container hostname> <worker pid>"
  /info           JSON: replica (hostname), pid, workers (gunicorn workers of this replica),
                  version
  /products       JSON: the first 20 products (a real query)
  /queue          JSON: workers (queue workers seen in the last 5 s), pending (jobs not done)
  /slow?ms=N      sleeps N ms, then 200 "ok" (for latency gates)
  /db/sleep?s=N   runs SELECT pg_sleep(N) in the database (a long query to kill)
"""

import json
import os
import socket
import time
from urllib.parse import parse_qs

import psycopg2

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://app@db/app")


def read_version():
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "VERSION")) as f:
            return f.read().strip() or "unknown"
    except OSError:
        return "unknown"


VERSION = read_version()


def connect():
    return psycopg2.connect(DATABASE_URL, connect_timeout=2, application_name="web")


def gunicorn_workers():
    """Workers of this replica: the processes whose parent is this worker's parent (the
    gunicorn master). The container has its own PID namespace, so /proc is this replica's."""
    master = os.getppid()
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            count += 1
    return count


def respond(start, status, body, content_type="text/plain"):
    data = body.encode() if isinstance(body, str) else body
    start(status, [("Content-Type", content_type), ("Content-Length", str(len(data)))])
    return [data]


def app(environ, start):
    def start_with_version(status, headers, *exc_info):
        return start(status, headers + [("X-App-Version", VERSION)], *exc_info)

    if VERSION == "broken":
        return respond(start_with_version, "500 Internal Server Error", "broken release\n")
    return route(environ, start_with_version)


def route(environ, start):
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/health":
        if os.path.exists("/tmp/unhealthy"):
            return respond(start, "503 Service Unavailable", "marked unhealthy (/tmp/unhealthy)\n")
        try:
            with connect() as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchone()
            conn.close()
        except Exception as error:  # the database is down or refuses us
            return respond(start, "503 Service Unavailable", f"database: {error}\n")
        return respond(start, "200 OK", "ok\n")
    if path == "/whoami":
        return respond(start, "200 OK", f"{socket.gethostname()} {os.getpid()}\n")
    if path == "/info":
        info = {"replica": socket.gethostname(), "pid": os.getpid(), "workers": gunicorn_workers(),
                "version": VERSION}
        return respond(start, "200 OK", json.dumps(info) + "\n", "application/json")
    if path == "/products":
        with connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT id, name, price FROM product WHERE active ORDER BY id LIMIT 20")
            rows = [{"id": r[0], "name": r[1], "price": float(r[2])} for r in cur.fetchall()]
        conn.close()
        return respond(start, "200 OK", json.dumps(rows) + "\n", "application/json")
    if path == "/queue":
        with connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM worker WHERE seen > now() - interval '5 seconds'")
            workers = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM job WHERE done_at IS NULL")
            pending = cur.fetchone()[0]
        conn.close()
        return respond(start, "200 OK", json.dumps({"workers": workers, "pending": pending}) + "\n", "application/json")
    if path == "/slow":
        time.sleep(int(query.get("ms", ["100"])[0]) / 1000.0)
        return respond(start, "200 OK", "ok\n")
    if path == "/db/sleep":
        seconds = float(query.get("s", ["5"])[0])
        try:
            with connect() as conn, conn.cursor() as cur:
                cur.execute("SELECT pg_sleep(%s)", (seconds,))
            conn.close()
        except Exception as error:  # killed by pg_terminate_backend
            return respond(start, "500 Internal Server Error", f"query ended: {error}\n")
        return respond(start, "200 OK", "slept\n")
    return respond(start, "404 Not Found", "not found\n")

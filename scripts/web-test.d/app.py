"""A tiny WSGI app for the web test stack (scripts/web-test).

GET /health        200 "ok"
GET /slow?ms=N     sleeps N milliseconds (at most 60000), then 200 "slept N ms"
GET /whoami        200 "REPLICA PID": the replica name (env REPLICA_NAME) and the worker's pid
GET /chunked       200 "ok" sent with Transfer-Encoding: chunked (pieces "o", "k")
GET /status/N      answers with status N
GET /flaky?percent=P   P % of the requests (default 20) answer 500, spread evenly over each
                   worker's requests: with 20, every fifth request of a worker fails
anything else      404
"""
import os
import time
from urllib.parse import parse_qs

# Requests to /flaky this worker has answered.
_flaky_requests = 0

REASONS = {200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently", 404: "Not Found",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


def _text(start_response, status, body, extra=()):
    data = body.encode()
    start_response("%d %s" % (status, REASONS.get(status, "Status")),
                   [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))] + list(extra))
    return [data]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/health":
        return _text(start_response, 200, "ok\n")
    if path == "/slow":
        try:
            ms = max(0, min(60000, int(query.get("ms", ["100"])[0])))
        except ValueError:
            return _text(start_response, 400, "ms must be a number\n")
        time.sleep(ms / 1000.0)
        return _text(start_response, 200, "slept %d ms\n" % ms)
    if path == "/whoami":
        return _text(start_response, 200, "%s %d\n" % (os.environ.get("REPLICA_NAME", "web"), os.getpid()))
    if path == "/chunked":
        # No Content-Length: gunicorn sends HTTP/1.1 responses chunked.
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return iter([b"o", b"k", b"\n"])
    if path == "/flaky":
        global _flaky_requests
        try:
            percent = max(0, min(100, int(query.get("percent", ["20"])[0])))
        except ValueError:
            return _text(start_response, 400, "percent must be a number\n")
        _flaky_requests += 1
        n = _flaky_requests
        # The nth request fails when n * P / 100 reaches a new whole number: exactly P % of
        # every 100 requests, evenly spaced, whatever the load.
        if n * percent // 100 > (n - 1) * percent // 100:
            return _text(start_response, 500, "flaky: request %d failed\n" % n)
        return _text(start_response, 200, "flaky: request %d ok\n" % n)
    if path.startswith("/status/"):
        try:
            code = int(path[len("/status/"):])
        except ValueError:
            code = 400
        return _text(start_response, code, "status %d\n" % code)
    return _text(start_response, 404, "not found\n")

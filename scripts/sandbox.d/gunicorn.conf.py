# gunicorn settings for the web service (/srv/app/gunicorn.conf.py on sandbox):
# managed by runbook, rendered from templates/gunicorn.conf.py.j2 by vertical-scale.
# The worker count is on the command line in docker-compose.prod.yml (--workers).
timeout = 30
graceful_timeout = 20
keepalive = 5
max_requests = 2000
max_requests_jitter = 200
accesslog = "-"
# %(L)s is the request time in seconds: `docker compose logs web` shows slow requests.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(L)ss'

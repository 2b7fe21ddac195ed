"""The driver behind bench/compare: writes the four tools' projects, runs the workloads in
rotating order, checks every run's result, and writes the report. Run by bench/compare
(which starts the hosts and passes everything in BENCH_* variables), with the Python of
bench/.out/venv. See bench/README.md.

`python compare.py --memwatch OUT -- ARGV...` is the memory sampler used for one untimed run
per tool and workload: it runs ARGV as a child subreaper and samples the whole process tree
(and the peak threads and open descriptors of ARGV's own process).
"""

import ctypes
import glob
import json
import os
import platform
import pwd
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

# ---------------------------------------------------------------------------------- memwatch


def descendants(root):
    """Every process below `root`, from one pass over /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the ppid follows the last ')'.
        fields = stat[stat.rfind(b")") + 2:].split()
        parents[int(entry)] = int(fields[1])
    tree = set()
    frontier = [root]
    while frontier:
        p = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == p and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return tree


def kill_tree(root):
    """SIGKILL `root` and everything below it (Ansible's workers leave its process group with setsid)."""
    for pid in [root, *descendants(root)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


SAMPLE_INTERVAL = 0.02  # seconds between two samples of /proc


class ProcPeaks:
    """The peak thread count (`Threads:` in /proc/PID/status) and number of open descriptors
    (entries of /proc/PID/fd) of one process, sampled.

    /proc/PID is opened once, as a directory, and read relative to that descriptor: once the
    process is reaped every read fails (ESRCH), so a PID reused by another process is never
    sampled. Between the exit and the reaping a zombie shows one thread and no descriptors,
    which leaves the peaks alone.
    """

    def __init__(self, pid):
        self.threads = self.fds = 0
        try:
            self.dir = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            self.dir = None

    def sample(self):
        if self.dir is None:
            return
        try:
            fd = os.open("status", os.O_RDONLY, dir_fd=self.dir)
            try:
                status = os.read(fd, 65536)
            finally:
                os.close(fd)
            fd = os.open("fd", os.O_RDONLY | os.O_DIRECTORY, dir_fd=self.dir)
            try:
                fds = len(os.listdir(fd))
            finally:
                os.close(fd)
        except OSError:
            return
        m = re.search(rb"^Threads:\s+(\d+)", status, re.M)
        if m:
            self.threads = max(self.threads, int(m.group(1)))
        self.fds = max(self.fds, fds)

    def watch(self, stop):
        """Samples every SAMPLE_INTERVAL until `stop` (a threading.Event) is set."""
        while True:
            self.sample()
            if stop.wait(SAMPLE_INTERVAL):
                break

    def close(self):
        if self.dir is not None:
            os.close(self.dir)
            self.dir = None


def can_raise_hard_limits():
    """Whether this process has CAP_SYS_RESOURCE (bit 24 of CapEff), which root in a container
    may lack: without it no limit goes above its hard limit."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> 24 & 1)
    return False


def nofile_for(n):
    """The descriptor limit raise_nofile(n) will give: n, or less when the hard limit is
    lower and cannot be raised."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= n:
        return soft
    if hard == resource.RLIM_INFINITY or hard >= n or can_raise_hard_limits():
        return n
    return hard


def raise_nofile(n):
    """Raises this process's descriptor limit (RLIMIT_NOFILE) to n when it is lower, the hard
    limit too if it is lower and may be raised, else to the hard limit. Run between fork and
    exec, so only the tool gets it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= n:
        return
    if hard == resource.RLIM_INFINITY or hard >= n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def memwatch(out_path, argv):
    """Runs argv, sampling the summed RSS and PSS of it and every descendant every 20 ms.

    The process becomes a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so processes that
    detach (Ansible's ControlPersist ssh masters) stay in the tree while the tool runs. Writes
    JSON: exit status, ru_maxrss of the tool's own wait4 (what GNU time's %M prints), the
    tree's peaks, and the peak threads and open descriptors of argv's own process.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    me = os.getpid()
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    own = ProcPeaks(child.pid)
    peak_rss = peak_pss = peak_procs = 0
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    status = None
    rusage = None
    while True:
        pid, st, ru = os.wait4(child.pid, os.WNOHANG)
        if pid == child.pid:
            status, rusage = st, ru
            break
        own.sample()
        tree = descendants(me)
        rss = pss = 0
        for p in tree:
            try:
                with open(f"/proc/{p}/statm") as f:
                    rss += int(f.read().split()[1]) * page_kb
                with open(f"/proc/{p}/smaps_rollup") as f:
                    for line in f:
                        if line.startswith("Pss:"):
                            pss += int(line.split()[1])
                            break
            except (OSError, ValueError, IndexError):
                continue
        peak_rss, peak_pss, peak_procs = max(peak_rss, rss), max(peak_pss, pss), max(peak_procs, len(tree))
        time.sleep(SAMPLE_INTERVAL)
    own.close()
    child.returncode = os.waitstatus_to_exitcode(status)
    # Reap whatever orphans exited meanwhile (the rest are re-parented when we exit).
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass
    with open(out_path, "w") as f:
        json.dump({"exit": child.returncode, "maxrss_kb": rusage.ru_maxrss, "tree_rss_kb": peak_rss,
                   "tree_pss_kb": peak_pss, "tree_procs": peak_procs, "threads": own.threads, "fds": own.fds}, f)
    return child.returncode


if len(sys.argv) > 1 and sys.argv[1] == "--memwatch":
    sys.exit(memwatch(sys.argv[2], sys.argv[4:]))

# ---------------------------------------------------------------------------------- settings

E = os.environ
REPO = E["BENCH_REPO"]
STATE = E["BENCH_STATE"]
RUN_DIR = E["BENCH_RUN_DIR"]
HOME = E["BENCH_HOME"]
KEY = E["BENCH_KEY"]
KNOWN_HOSTS = E["BENCH_KNOWN_HOSTS"]          # the first 100 hosts: W1-W6
KNOWN_HOSTS_ALL = E["BENCH_KNOWN_HOSTS_ALL"]  # every host started: W7
PORT = int(E["BENCH_PORT"])
USER = E["BENCH_USER"]
BENCH_UID = pwd.getpwnam(USER).pw_uid
NHOSTS = int(E["BENCH_NHOSTS"])
C_LOOP = E["BENCH_C_LOOP"]
RUNBOOK = E["BENCH_RUNBOOK"]
VENV = E["BENCH_VENV"]
ROUNDS = int(E["BENCH_ROUNDS"])
WORKLOADS = [w.strip().upper() for w in E["BENCH_WORKLOADS"].split(",") if w.strip()]
SMOKE = E["BENCH_SMOKE"] == "1"
REPORT = E["BENCH_REPORT"]
SANDBOX_REPO = E["BENCH_SANDBOX_REPO"]
QUICKACK = E.get("BENCH_QUICKACK", "0") == "1"
RUN_TIMEOUT = 900  # seconds; a run that takes longer is killed and counted as failed

TOOLS = ["runbook", "libssh2-loop", "ansible", "pyinfra"]
# Runs per tool per case per round: the fast ones are cheap to repeat, which steadies their
# medians; Ansible and pyinfra run once per round.
REPS = {"runbook": 3, "libssh2-loop": 3, "ansible": 1, "pyinfra": 1}
if SMOKE:
    REPS = {t: 1 for t in TOOLS}

ANSIBLE_PLAYBOOK = os.path.join(VENV, "bin", "ansible-playbook")
PYINFRA = os.path.join(VENV, "bin", "pyinfra")

RB = os.path.join(STATE, "runbook")      # runbook's project
AN = os.path.join(STATE, "ansible")      # Ansible's
PY = os.path.join(STATE, "pyinfra")      # pyinfra's
LOGS = os.path.join(RUN_DIR, "logs")
os.makedirs(LOGS, exist_ok=True)


def host_name(i):
    return f"h{i:03d}"


def address(i):
    """Host i's address (from 1): 127.0.1.1 … 127.0.1.254, then 127.0.2.1 …, skipping .0 and
    .255, so host 500 is 127.0.2.246. bench/compare's addr() is the same function."""
    return f"127.0.{1 + (i - 1) // 254}.{(i - 1) % 254 + 1}"


def log(msg):
    print(f"bench/compare: {msg}", file=sys.stderr, flush=True)


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


# ---------------------------------------------------------------------------------- projects
# The same work for each tool. Host sets: W1 and W3 one host, W2 twenty, W4 a hundred, W7
# five hundred (its own known_hosts: the others keep reading a file of 100 entries).
HOST_SETS = {"w1": 1, "w2": 20, "w4": 100, "w7": 500}
STEPS = {"w1": 20, "w2": 5, "w4": 3, "w7": 3}


def known_hosts_for(host_set):
    return KNOWN_HOSTS_ALL if HOST_SETS[host_set] > 100 else KNOWN_HOSTS

W3_DEST = os.path.join(HOME, "w3", "app.conf")
W3_OLD_WORKERS, W3_NEW_WORKERS = 4, 8
# The template, as each tool spells its variable. Rendered, all three are byte for byte the
# same file.
W3_TEMPLATE = """# app.conf: managed by the benchmark (bench/compare, W3)
[server]
bind = 0.0.0.0:5000
workers = {workers}
timeout = 30
keepalive = 5
max_requests = 2000

[database]
url = postgresql://app@127.0.0.1:5432/app
pool_size = 10
"""


def w3_content(workers):
    return W3_TEMPLATE.format(workers=workers)


def w3_reset():
    """Puts the remote file back as it was before the template ran (old worker count)."""
    write(W3_DEST, w3_content(W3_OLD_WORKERS), 0o644)
    shutil.chown(W3_DEST, USER, USER)
    # runbook keeps a backup of the old file beside it for rollback; drop those between runs.
    for path in glob.glob(os.path.join(os.path.dirname(W3_DEST), ".app.conf.runbook-bak-*")):
        os.unlink(path)


def make_runbook_project():
    for name, n in HOST_SETS.items():
        inv_defaults = (f"defaults: {{ user: {USER}, port: {PORT}, identity_file: {KEY}, "
                        f"known_hosts: {known_hosts_for(name)}, host_key_checking: strict }}\n")
        lines = [inv_defaults, "hosts:\n"]
        for i in range(1, n + 1):
            # Every host is this machine, so each gets its own lock path (the default,
            # /tmp/runbook.lock, would be one lock for all of them).
            lines.append(f"  {host_name(i)}: {{ address: {address(i)}, vars: {{ runbook_lock_path: {HOME}/locks/{host_name(i)} }} }}\n")
        write(os.path.join(RB, "inventory", f"{name}.yml"), "".join(lines))
    for name, steps in STEPS.items():
        body = [f"name: {name}\n", f"description: {steps} trivial steps (bench/compare)\n", "hosts: all\n", "steps:\n"]
        for s in range(1, steps + 1):
            body.append(f"  - name: step {s}\n    command: {{ run: \"true\" }}\n")
        write(os.path.join(RB, "runbooks", f"{name}.yml"), "".join(body))
    write(os.path.join(RB, "runbooks", "w3.yml"), f"""name: w3
description: one template step (bench/compare)
hosts: all
params:
  workers: {{ type: int, default: {W3_NEW_WORKERS} }}
steps:
  - name: Render app.conf
    template: {{ src: app.conf.j2, dest: {W3_DEST}, mode: "0644" }}
""")
    write(os.path.join(RB, "templates", "app.conf.j2"), W3_TEMPLATE.replace("{workers}", "{{ params.workers }}"))


def make_ansible_project():
    os.makedirs(os.path.join(AN, "cp"), exist_ok=True)
    os.makedirs(os.path.join(AN, "tmp"), exist_ok=True)
    # What a user who knows Ansible sets for speed: no fact gathering, pipelining (the module
    # goes to the remote python on stdin: no temp files, one ssh exchange per task),
    # ControlPersist (one SSH connection per host, reused by every task), the interpreter
    # named (no discovery round trip).
    write(os.path.join(AN, "ansible.cfg"), f"""[defaults]
gathering = explicit
host_key_checking = True
interpreter_python = /usr/bin/python3
retry_files_enabled = False
local_tmp = {AN}/tmp
forks = 100

[ssh_connection]
pipelining = True
ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o PreferredAuthentications=publickey -o IdentitiesOnly=yes
control_path_dir = {AN}/cp
""")
    for name, n in HOST_SETS.items():
        common = (f"ansible_port={PORT}\nansible_user={USER}\nansible_ssh_private_key_file={KEY}\n"
                  f"ansible_ssh_common_args=-o UserKnownHostsFile={known_hosts_for(name)} -o StrictHostKeyChecking=yes\n")
        hosts = "".join(f"{host_name(i)} ansible_host={address(i)}\n" for i in range(1, n + 1))
        write(os.path.join(AN, f"inventory-{name}.ini"), f"[bench]\n{hosts}\n[bench:vars]\n{common}")
    for name, steps in STEPS.items():
        tasks = "".join(f"    - name: step {s}\n      command: \"true\"\n" for s in range(1, steps + 1))
        write(os.path.join(AN, f"{name}.yml"), f"- hosts: bench\n  gather_facts: false\n  tasks:\n{tasks}")
    write(os.path.join(AN, "w3.yml"), f"""- hosts: bench
  gather_facts: false
  vars:
    workers: {W3_NEW_WORKERS}
  tasks:
    - name: Render app.conf
      template: {{ src: app.conf.j2, dest: {W3_DEST}, mode: "0644" }}
""")
    write(os.path.join(AN, "app.conf.j2"), W3_TEMPLATE.replace("{workers}", "{{ workers }}"))


def make_pyinfra_project():
    for name, n in HOST_SETS.items():
        data = (f'"ssh_port": {PORT}, "ssh_user": "{USER}", "ssh_key": "{KEY}", '
                f'"ssh_known_hosts_file": "{known_hosts_for(name)}", "ssh_strict_host_key_checking": "yes"')
        hosts = "".join(f'    ("{host_name(i)}", {{"ssh_hostname": "{address(i)}", {data}}}),\n' for i in range(1, n + 1))
        write(os.path.join(PY, f"inventory_{name}.py"), f"hosts = [\n{hosts}]\n")
    for name, steps in STEPS.items():
        ops = "".join(f'server.shell(name="step {s}", commands=["true"])\n' for s in range(1, steps + 1))
        write(os.path.join(PY, f"{name}.py"), f"from pyinfra.operations import server\n\n{ops}")
    write(os.path.join(PY, "w3.py"), f"""from pyinfra.operations import files

files.template(name="Render app.conf", src="templates/app.conf.j2", dest="{W3_DEST}", mode="644",
               workers={W3_NEW_WORKERS})
""")
    write(os.path.join(PY, "templates", "app.conf.j2"), W3_TEMPLATE.replace("{workers}", "{{ workers }}"))


# ---------------------------------------------------------------------------------- W6 (sandbox)
SANDBOX = {"address": "10.233.0.2", "key": os.path.join(SANDBOX_REPO, ".sandbox", "id_ed25519"),
           "known_hosts": os.path.join(SANDBOX_REPO, ".sandbox", "known_hosts")}
# The inventory vars and default params vertical-scale renders its two templates with
# (inventory/sandbox.yml, runbooks/vertical-scale.yml), for the other tools' templates.
SANDBOX_HOST_VARS = {"name": "sandbox", "address": "10.233.0.2", "app_dir": "/srv/app",
                     "compose_file": "/srv/app/docker-compose.prod.yml", "app_image": "runbook-sandbox/app:1",
                     "runtime_from_host": True, "http_port": 80}
SANDBOX_PARAMS = {"workers": 8, "timeout": 30, "keep_backups": 7}


SANDBOX_STARTED = []  # the sandbox script, when this run brought the sandbox up


def sandbox_down_if_started():
    """Leaves the sandbox as it was found: down again if this run started it (BENCH_KEEP_SANDBOX=1 keeps it)."""
    if SANDBOX_STARTED and E.get("BENCH_KEEP_SANDBOX") != "1":
        log("stopping the sandbox this run started (BENCH_KEEP_SANDBOX=1 keeps it)")
        subprocess.run([SANDBOX_STARTED[0], "down"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)


def sandbox_status():
    """(usable, reason). Brings the sandbox up (idempotent) when it is down."""
    script = os.path.join(SANDBOX_REPO, "scripts", "sandbox")
    if not os.access(script, os.X_OK):
        return False, f"no {script}"

    def up_now():
        try:
            out = subprocess.run([script, "status"], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired) as e:
            return False, str(e)
        return bool(re.search(r"^host:\s+up", out, re.M)), out.strip().replace("\n", "; ")

    up, text = up_now()
    if not up and os.path.exists("/run/netns/rb-sandbox"):
        # Another checkout's sandbox holds the one namespace and address every sandbox uses.
        return False, "the sandbox's network namespace rb-sandbox is held by another checkout's sandbox"
    if not up:
        log(f"the sandbox is down ({text}): {script} up")
        SANDBOX_STARTED.append(script)
        try:
            r = subprocess.run([script, "up"], capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            return False, f"`scripts/sandbox up` did not finish: {e}"
        with open(os.path.join(LOGS, "sandbox-up.log"), "w") as f:
            f.write(r.stdout + r.stderr)
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            return False, f"`scripts/sandbox up` failed (exit {r.returncode}): {tail[0]}"
        up, text = up_now()
        if not up:
            return False, f"the sandbox is not up after `scripts/sandbox up`: {text}"
    for path in (SANDBOX["key"], SANDBOX["known_hosts"]):
        if not os.path.exists(path):
            return False, f"{path} is missing"
    return True, "up"


def make_w6_projects():
    for name in ("docker-compose.prod.yml.j2", "gunicorn.conf.py.j2"):
        shutil.copyfile(os.path.join(REPO, "templates", name), os.path.join(RB, "templates", name))
    write(os.path.join(RB, "runbooks", "w6.yml"), """name: w6
description: vertical-scale's two template steps (bench/compare, W6b)
hosts: web
params:
  workers: { type: int, default: 8, min: 1, max: 64 }
  timeout: { type: int, default: 30, min: 5, max: 600 }
steps:
  - name: Set gunicorn workers in docker-compose.prod.yml
    template: { src: docker-compose.prod.yml.j2, dest: "{{ host.compose_file }}", mode: "0644" }
  - name: Render gunicorn.conf.py
    template: { src: gunicorn.conf.py.j2, dest: "{{ host.app_dir }}/gunicorn.conf.py", mode: "0644" }
""")
    vars_yaml = json.dumps({"host": SANDBOX_HOST_VARS, "params": SANDBOX_PARAMS})
    write(os.path.join(AN, "inventory-w6.ini"), f"""[web]
sandbox ansible_host={SANDBOX['address']}

[web:vars]
ansible_user=root
ansible_ssh_private_key_file={SANDBOX['key']}
ansible_ssh_common_args=-o UserKnownHostsFile={SANDBOX['known_hosts']} -o StrictHostKeyChecking=yes
""")
    tpl = os.path.join(REPO, "templates")
    write(os.path.join(AN, "w6.yml"), f"""- hosts: web
  gather_facts: false
  vars: {vars_yaml}
  tasks:
    - name: Set gunicorn workers in docker-compose.prod.yml
      template: {{ src: {tpl}/docker-compose.prod.yml.j2, dest: /srv/app/docker-compose.prod.yml, mode: "0644" }}
    - name: Render gunicorn.conf.py
      template: {{ src: {tpl}/gunicorn.conf.py.j2, dest: /srv/app/gunicorn.conf.py, mode: "0644" }}
""")
    write(os.path.join(PY, "inventory_w6.py"), f"""hosts = [
    ("sandbox", {{"ssh_hostname": "{SANDBOX['address']}", "ssh_user": "root", "ssh_key": "{SANDBOX['key']}",
                 "ssh_known_hosts_file": "{SANDBOX['known_hosts']}", "ssh_strict_host_key_checking": "yes"}}),
]
""")
    write(os.path.join(PY, "w6.py"), f"""from pyinfra.operations import files

# trim_blocks, as runbook and Ansible render: a block tag takes its line's newline with it.
data = {{"host": {SANDBOX_HOST_VARS!r}, "params": {SANDBOX_PARAMS!r}}}
jinja = {{"trim_blocks": True}}
files.template(name="Set gunicorn workers in docker-compose.prod.yml", src="{tpl}/docker-compose.prod.yml.j2",
               dest="/srv/app/docker-compose.prod.yml", mode="644", jinja_env_kwargs=jinja, **data)
files.template(name="Render gunicorn.conf.py", src="{tpl}/gunicorn.conf.py.j2",
               dest="/srv/app/gunicorn.conf.py", mode="644", jinja_env_kwargs=jinja, **data)
""")


# ---------------------------------------------------------------------------------- checks
# Each returns (ok, reached, failed, note): whether the run did the workload, and for the
# multi-host workloads how many hosts completed every step and how many did not.


def check_runbook_apply(n_hosts, n_steps):
    line = re.compile(r"^(\S+)\s+\[(\d+)/(\d+)\]\s.*\s(changed|ok|skipped|FAILED|failed)\s+[\d.]+\s*(ms|s)\s*$")

    def check(rc, out):
        done = {}
        for m in map(line.match, out.splitlines()):
            if m and m.group(4) in ("changed", "ok") and int(m.group(3)) == n_steps:
                done[m.group(1)] = done.get(m.group(1), 0) + 1
        reached = sum(1 for v in done.values() if v == n_steps)
        ok = rc == 0 and reached == n_hosts and re.search(r"^run \S+ succeeded", out, re.M) is not None
        return ok, reached, n_hosts - reached, "" if ok else f"exit {rc}"
    return check


def check_ansible(n_hosts, n_steps, changed_expected=None):
    recap = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

    def check(rc, out):
        reached = failed = 0
        for m in recap.finditer(out):
            good = int(m.group(2)) == n_steps and m.group(4) == "0" and m.group(5) == "0"
            if changed_expected is not None:
                good = good and int(m.group(3)) == changed_expected
            reached += good
            failed += not good
        ok = rc == 0 and reached == n_hosts
        return ok, reached, n_hosts - reached, "" if ok else f"exit {rc}"
    return check


def check_pyinfra(n_hosts, n_steps):
    success = re.compile(r"^\s+\[(\S+)\] (Success|No changes)\s*$", re.M)

    def check(rc, out):
        counts = {}
        for m in success.finditer(out):
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
        reached = sum(1 for v in counts.values() if v == n_steps)
        ok = rc == 0 and reached == n_hosts
        return ok, reached, n_hosts - reached, "" if ok else f"exit {rc}"
    return check


def check_c_loop(n_hosts):
    def check(rc, out):
        try:
            doc = json.loads(out.strip().splitlines()[0])
        except (ValueError, IndexError):
            return False, 0, n_hosts, f"exit {rc}, no JSON"
        hosts = doc.get("per_host", [doc])
        reached = sum(1 for h in hosts if h.get("ok") and h.get("nonzero_exits") == 0)
        ok = rc == 0 and reached == n_hosts
        return ok, reached, n_hosts - reached, "" if ok else f"exit {rc}"
    return check


def check_exit(rc, out):
    return rc == 0, None, None, "" if rc == 0 else f"exit {rc}"


def check_plan(rc, out):
    ok = rc == 0 and re.search(r"^Plan: ", out, re.M) is not None
    return ok, None, None, "" if ok else f"exit {rc}"


def w3_plan_check(inner, diff_pattern):
    """A dry run must show the diff and leave the file alone."""
    def check(rc, out):
        ok, reached, failed, note = inner(rc, out)
        with open(W3_DEST) as f:
            untouched = f.read() == w3_content(W3_OLD_WORKERS)
        shown = re.search(diff_pattern, out, re.M) is not None
        if ok and not untouched:
            ok, note = False, "the dry run changed the file"
        if ok and not shown:
            ok, note = False, "no diff in the output"
        return ok, reached, failed, note
    return check


def w3_apply_check(inner):
    def check(rc, out):
        ok, reached, failed, note = inner(rc, out)
        with open(W3_DEST) as f:
            if ok and f.read() != w3_content(W3_NEW_WORKERS):
                ok, note = False, "the file does not hold the rendered template"
        return ok, reached, failed, note
    return check


# ---------------------------------------------------------------------------------- cases


class Invocation:
    """One tool's command line for one case, with what runs around it and how it is judged."""

    def __init__(self, argv, check, cwd=None, env=None, before=None, after=None, nofile=None):
        self.argv, self.check, self.cwd, self.env = argv, check, cwd, env
        self.before, self.after = before, after
        self.nofile = nofile        # the descriptor limit the tool needs at least (None: as inherited)


class Case:
    def __init__(self, key, title, what, tools, na=None, hosts=None, watch=False):
        self.key, self.title, self.what = key, title, what
        self.tools = tools          # tool -> Invocation
        self.na = na or {}          # tool -> why it is not measured
        self.hosts = hosts          # hosts the workload must reach (None: not a host workload)
        self.watch = watch          # sample the tool's threads and open descriptors in every run


def close_ansible_masters():
    """Ansible's ControlPersist masters outlive the run by 60 s: closed after each run, so the
    next run (of any tool) starts from nothing, as the first run of the day does."""
    for sock in glob.glob(os.path.join(AN, "cp", "*")):
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "bench"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)


def runbook_argv(*args, inventory=None, forks=None):
    argv = [RUNBOOK, *args, "--root", RB, "--state-dir", os.path.join(RB, ".runbook"), "--color", "never"]
    if inventory:
        argv += ["-i", os.path.join(RB, "inventory", f"{inventory}.yml")]
    if forks:
        argv += ["--forks", str(forks)]
    return argv


def c_loop_argv(n_hosts, n_steps, known_hosts=KNOWN_HOSTS):
    return [C_LOOP, address(1), str(PORT), USER, KEY, known_hosts, str(n_steps),
            *[address(i) for i in range(2, n_hosts + 1)]]


ANSIBLE_ENV = {"ANSIBLE_CONFIG": os.path.join(AN, "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_FORCE_COLOR": "0", "PATH": f"{os.path.join(VENV, 'bin')}:{E['PATH']}"}
PYINFRA_ENV = {"PATH": f"{os.path.join(VENV, 'bin')}:{E['PATH']}"}


def ansible(playbook, inventory, forks, check, extra=()):
    return Invocation([ANSIBLE_PLAYBOOK, "-i", os.path.join(AN, f"inventory-{inventory}.ini"), "-f", str(forks), *extra,
                       os.path.join(AN, playbook)], check, cwd=AN, env=ANSIBLE_ENV, after=close_ansible_masters)


def pyinfra(deploy, inventory, parallel, check, extra=("-y",)):
    return Invocation([PYINFRA, *extra, "--parallel", str(parallel), f"inventory_{inventory}.py", deploy], check,
                      cwd=PY, env=PYINFRA_ENV)


def host_case(key, title, n_hosts, n_steps):
    inv = {1: "w1", 20: "w2", 100: "w4", 500: "w7"}[n_hosts]
    forks = max(n_hosts, 10)
    what = (f"{n_hosts} host{'s' if n_hosts > 1 else ''} × {n_steps} steps running `true`"
            + ("" if n_hosts == 1 else f", all hosts at once ({n_hosts} forks / threads)"))
    tools = {
        "runbook": Invocation(runbook_argv("apply", inv, "--yes", inventory=inv, forks=forks if n_hosts > 1 else None),
                              check_runbook_apply(n_hosts, n_steps)),
        "libssh2-loop": Invocation(c_loop_argv(n_hosts, n_steps, known_hosts_for(inv)), check_c_loop(n_hosts)),
        "ansible": ansible(f"{inv}.yml", inv, forks, check_ansible(n_hosts, n_steps)),
        "pyinfra": pyinfra(f"{inv}.py", inv, n_hosts, check_pyinfra(n_hosts, n_steps)),
    }
    return Case(key, title, what, tools, hosts=n_hosts)


# W7's descriptor limit for each tool: a socket per host, and in the C loop, while its threads
# connect, each thread's known_hosts and key file open at once: more than the usual soft limit
# of 1024 for 500 hosts. Raised for W7's tools only (between fork and exec); a higher limit
# already in place is kept.
W7_NOFILE = 8192

W7_ANSIBLE_NA = ("not run: a worker process and an ssh client per host (`-f 500`); one run of this workload by hand "
                 "took 631 s on this machine (bench/README.md): over an hour for the warm-up and 5 rounds")


def fan_out_case():
    """W7: W4's three `true` steps on 500 hosts at once. Every run also samples the tool's
    peak threads and open descriptors; a run that does not reach all 500 hosts fails."""
    case = host_case("W7", "W7: 500 hosts × 3 steps, all at once (fan-out)", 500, 3)
    nofile = nofile_for(W7_NOFILE)
    if nofile < W7_NOFILE:
        log(f"W7: the tools' descriptor limit stays at {nofile}, the hard limit, which this process may not raise "
            f"(no CAP_SYS_RESOURCE); {W7_NOFILE} was wanted")
    case.what += (f"; {address(1)}–{address(500)}; descriptor limit (`ulimit -n`) {nofile}. Every run also samples the "
                  "peak threads and open descriptors of the tool's own process, and fails unless every one of the 500 "
                  "hosts completed every step")
    del case.tools["ansible"]
    case.na["ansible"] = W7_ANSIBLE_NA
    for inv in case.tools.values():
        inv.nofile = W7_NOFILE
    case.watch = True
    return case


def make_cases(w6_state):
    cases = []
    if "W1" in WORKLOADS:
        cases.append(host_case("W1", "W1: one host, 20 trivial steps", 1, 20))
    if "W2" in WORKLOADS:
        cases.append(host_case("W2", "W2: 20 hosts × 5 steps, in parallel", 20, 5))
    if "W3" in WORKLOADS:
        na = {"libssh2-loop": "no templates: the C loop only runs commands"}
        cases.append(Case("W3-plan", "W3a: template dry run with diff",
                          f"one `template` step whose destination differs (workers {W3_OLD_WORKERS} → {W3_NEW_WORKERS}), planned: "
                          "the diff is shown and nothing changes",
                          {"runbook": Invocation(runbook_argv("plan", "w3", inventory="w1"),
                                                 w3_plan_check(check_exit, rf"^\s*\+workers = {W3_NEW_WORKERS}$"), before=w3_reset),
                           "ansible": ansible("w3.yml", "w1", 10, w3_plan_check(check_ansible(1, 1, 1), rf"^\+workers = {W3_NEW_WORKERS}$"),
                                              extra=("--check", "--diff")),
                           "pyinfra": pyinfra("w3.py", "w1", 1, w3_plan_check(check_exit, rf"\+\s*workers = {W3_NEW_WORKERS}"),
                                              extra=("--dry", "--diff"))},
                          na=na))
        for tool in ("ansible", "pyinfra"):
            cases[-1].tools[tool].before = w3_reset
        cases.append(Case("W3-apply", "W3b: template apply",
                          "the same step applied: the file is written (checked after each run) and put back between runs",
                          {"runbook": Invocation(runbook_argv("apply", "w3", "--yes", inventory="w1"),
                                                 w3_apply_check(check_runbook_apply(1, 1)), before=w3_reset),
                           "ansible": ansible("w3.yml", "w1", 10, w3_apply_check(check_ansible(1, 1, 1))),
                           "pyinfra": pyinfra("w3.py", "w1", 1, w3_apply_check(check_pyinfra(1, 1)))},
                          na=na))
        for tool in ("ansible", "pyinfra"):
            cases[-1].tools[tool].before = w3_reset
    if "W4" in WORKLOADS:
        cases.append(host_case("W4", "W4: 100 hosts × 3 steps, in parallel", 100, 3))
    if "W5" in WORKLOADS:
        cases.append(Case("W5", "W5: --version", "`--version`: process start, nothing else",
                          {"runbook": Invocation([RUNBOOK, "--version"], check_exit),
                           "ansible": Invocation([ANSIBLE_PLAYBOOK, "--version"], check_exit, env=ANSIBLE_ENV),
                           "pyinfra": Invocation([PYINFRA, "--version"], check_exit, env=PYINFRA_ENV)},
                          na={"libssh2-loop": "not a tool with a version to ask for"}))
    if "W6" in WORKLOADS:
        usable, reason = w6_state
        na_c = {"libssh2-loop": "no templates or plan: the C loop only runs commands"}
        titles = ("W6a: `runbook plan vertical-scale` against the sandbox",
                  "W6b: vertical-scale's two templates, checked with diff against the sandbox")
        whats = ("the shipped runbook's whole plan against the sandbox (10.233.0.2): it also sizes the database and lists "
                 "the backups for its `pg_backup` step, through `docker-compose exec` on the host",
                 "the two `template` steps of vertical-scale (docker-compose.prod.yml, gunicorn.conf.py; the sandbox's "
                 "inventory vars, the default params) diffed against /srv/app on the sandbox: runbook `plan` of a runbook "
                 "holding just those two steps, Ansible `--check --diff`, pyinfra `--dry --diff`")
        if not usable:
            for key, title, what in zip(("W6a", "W6b"), titles, whats):
                cases.append(Case(key, title, what, {}, na={t: f"skipped: {reason}" for t in TOOLS}))
        else:
            inv = os.path.join(SANDBOX_REPO, "inventory", "sandbox.yml")
            state = os.path.join(STATE, "w6-state")
            cases.append(Case("W6a", titles[0], whats[0],
                              {"runbook": Invocation([RUNBOOK, "plan", "vertical-scale", "-i", inv, "--root", REPO,
                                                      "--state-dir", state, "--color", "never"], check_plan)},
                              na={**na_c, "ansible": "no equivalent of the whole runbook: see W6b",
                                  "pyinfra": "no equivalent of the whole runbook: see W6b"}))
            cases.append(Case("W6b", titles[1], whats[1],
                              {"runbook": Invocation([RUNBOOK, "plan", "w6", "-i", inv, "--root", RB, "--state-dir", state,
                                                      "--color", "never"], check_plan),
                               "ansible": Invocation([ANSIBLE_PLAYBOOK, "-i", os.path.join(AN, "inventory-w6.ini"), "--check", "--diff",
                                                      os.path.join(AN, "w6.yml")], check_ansible(1, 2), cwd=AN, env=ANSIBLE_ENV,
                                                     after=close_ansible_masters),
                               "pyinfra": Invocation([PYINFRA, "--dry", "--diff", "inventory_w6.py", "w6.py"],
                                                     check_exit, cwd=PY, env=PYINFRA_ENV)},
                              na=na_c))
    if "W7" in WORKLOADS:
        cases.append(fan_out_case())
    return cases


# ---------------------------------------------------------------------------------- running


def bench_sessions():
    """The hosts' processes serving a tool: sshd's for the bench user and what runs as that user."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/status") as f:
                uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        except (OSError, StopIteration, ValueError):
            continue
        if uid == BENCH_UID or cmdline.startswith(f"sshd: {USER}".encode()):
            count += 1
    return count


def busy_fraction(window):
    """The share of all CPUs busy over `window` seconds (/proc/stat)."""
    def sample():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait
    total0, idle0 = sample()
    time.sleep(window)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def settle(limit=5.0):
    """Waits, at most `limit` seconds, until the run before has ended on the hosts too (no
    session of the bench user left: sshd and the shells it started take a while to exit after
    the tool does, most after 20 hosts) and the CPUs have been idle for 100 ms. Without it a
    run could pay for the teardown of the one before, which varies with which tool ran before."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and bench_sessions() > 0:
        time.sleep(0.02)
    while time.monotonic() < deadline and busy_fraction(0.1) > 0.1:
        pass


def run_once(case, tool, inv, label, sample_memory=False):
    """Runs one invocation on a settled machine, timed from outside: exec to exit, with wait4's
    ru_maxrss."""
    if inv.before:
        inv.before()
    settle()
    env = dict(E)
    if inv.env:
        env.update(inv.env)
    out_path = os.path.join(LOGS, f"{case.key}-{tool}-{label}.log")
    mem_path = out_path + ".mem.json"
    argv = inv.argv
    if sample_memory:
        argv = [sys.executable, os.path.abspath(__file__), "--memwatch", mem_path, "--", *argv]
    timed_out = []
    preexec = (lambda: raise_nofile(inv.nofile)) if inv.nofile else None

    def kill(pid):
        timed_out.append(True)
        kill_tree(pid)

    with open(out_path, "w") as out:
        t0 = time.perf_counter_ns()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                cwd=inv.cwd, env=env, start_new_session=True, preexec_fn=preexec)
        RUNNING[:] = [proc.pid]
        timer = threading.Timer(RUN_TIMEOUT, kill, args=(proc.pid,))
        timer.daemon = True
        timer.start()
        # The tool's threads and descriptors, sampled on another thread while this one waits
        # (under memwatch, memwatch samples them: proc is memwatch's own process then).
        watcher = None
        if case.watch and not sample_memory:
            watcher, stop_watching = ProcPeaks(proc.pid), threading.Event()
            watching = threading.Thread(target=watcher.watch, args=(stop_watching,), daemon=True)
            watching.start()
        _, status, rusage = os.wait4(proc.pid, 0)
        t1 = time.perf_counter_ns()
        RUNNING.clear()
        timer.cancel()
        if watcher:
            stop_watching.set()
            watching.join()
            watcher.close()
    proc.returncode = rc = os.waitstatus_to_exitcode(status)
    if inv.after:
        inv.after()
    with open(out_path, errors="replace") as f:
        text = f.read()
    ok, reached, failed, note = inv.check(rc, text)
    if timed_out:
        ok, note = False, f"killed after {RUN_TIMEOUT} s"
    result = {"case": case.key, "tool": tool, "label": label, "ok": ok, "exit": rc, "reached": reached,
              "failed": failed, "note": note, "seconds": (t1 - t0) / 1e9, "maxrss_kb": rusage.ru_maxrss,
              "log": out_path, "sampled": sample_memory, "threads": None, "fds": None}
    if watcher:
        result["threads"], result["fds"] = watcher.threads, watcher.fds
    if sample_memory:
        try:
            with open(mem_path) as f:
                result["memory"] = json.load(f)
        except (OSError, ValueError):
            result["memory"] = None
        if case.watch and result["memory"]:
            result["threads"], result["fds"] = result["memory"].get("threads"), result["memory"].get("fds")
    if not ok:
        log(f"{case.key} {tool} ({label}) FAILED: {note}; output in {out_path}")
    return result


RUNNING = []  # the run in progress (its PID)


def stop(signum, frame):
    """bench/compare is stopping (Ctrl-C, TERM, a failure): end the run in progress too."""
    for pid in RUNNING:
        kill_tree(pid)
    close_ansible_masters()
    sys.exit(128 + signum)


def rotated(tools, k):
    k %= len(tools)
    return tools[k:] + tools[:k]


def main():
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    load_before = open("/proc/loadavg").read().split()[:3]
    make_runbook_project()
    make_ansible_project()
    make_pyinfra_project()
    w6_state = (False, "not requested")
    if "W6" in WORKLOADS:
        w6_state = sandbox_status()
        if w6_state[0]:
            make_w6_projects()
        else:
            log(f"W6 skipped: {w6_state[1]}")
    cases = make_cases(w6_state)
    try:
        return run_cases(cases, load_before)
    finally:
        sandbox_down_if_started()


def run_cases(cases, load_before):
    results = []
    started = time.time()
    for r in range(ROUNDS):
        for ci, case in enumerate(cases):
            present = [t for t in TOOLS if t in case.tools]
            for tool in rotated(present, r + ci):
                inv = case.tools[tool]
                if r == 0 and not SMOKE:
                    # Untimed: warms the page cache and Python's bytecode caches, and samples
                    # the memory of the whole process tree.
                    results.append(run_once(case, tool, inv, "warmup", sample_memory=True))
                for k in range(REPS[tool] if case.key != "W5" else 3 if not SMOKE else 1):
                    results.append(run_once(case, tool, inv, f"r{r + 1}-{k + 1}"))
            log(f"round {r + 1}/{ROUNDS}: {case.key} done ({time.time() - started:.0f} s)")
    load_after = open("/proc/loadavg").read().split()[:3]
    with open(os.path.join(RUN_DIR, "results.json"), "w") as f:
        json.dump({"results": results, "load_before": load_before, "load_after": load_after}, f, indent=1)
    timed = [x for x in results if x["label"] != "warmup"]
    failures = [x for x in results if not x["ok"]]
    summary = summarize(cases, results)
    if SMOKE:
        print(smoke_text(cases, summary))
        if failures:
            log(f"{len(failures)} run(s) failed: " + ", ".join(f"{x['case']} {x['tool']} ({x['note']})" for x in failures))
            return 1
        log("smoke: every tool did the workload")
        return 0
    report = report_text(cases, summary, load_before, load_after, len(timed))
    with open(os.path.join(REPO, REPORT) if not os.path.isabs(REPORT) else REPORT, "w") as f:
        f.write(report)
    print(report)
    log(f"wrote {REPORT}; raw results in {RUN_DIR}/results.json")
    if failures:
        log(f"{len(failures)} run(s) failed (see the report)")
    return 0


# ---------------------------------------------------------------------------------- report


def summarize(cases, results):
    s = {}
    for case in cases:
        for tool in TOOLS:
            runs = [x for x in results if x["case"] == case.key and x["tool"] == tool]
            if not runs:
                continue
            timed = [x for x in runs if x["label"] != "warmup"]
            good = [x for x in timed if x["ok"]]
            times = [x["seconds"] for x in good]
            mem = [x["memory"] for x in runs if x.get("memory")]
            s[(case.key, tool)] = {
                "runs": len(timed), "ok": len(good), "failed_runs": len(timed) - len(good),
                "median": statistics.median(times) if times else None,
                "min": min(times) if times else None, "max": max(times) if times else None,
                "maxrss_kb": statistics.median([x["maxrss_kb"] for x in timed]) if timed else None,
                "tree_pss_kb": max(m["tree_pss_kb"] for m in mem) if mem else None,
                "tree_rss_kb": max(m["tree_rss_kb"] for m in mem) if mem else None,
                "tree_procs": max(m["tree_procs"] for m in mem) if mem else None,
                # The peaks of every run, the warm-up's included.
                "threads": max((x["threads"] for x in runs if x.get("threads") is not None), default=None),
                "fds": max((x["fds"] for x in runs if x.get("fds") is not None), default=None),
                "reached": min((x["reached"] for x in timed if x["reached"] is not None), default=None),
                "unreached": max((x["failed"] for x in timed if x["failed"] is not None), default=None),
                "notes": sorted({x["note"] for x in runs if x["note"]}),
            }
    return s


def fmt_s(v):
    if v is None:
        return "—"
    if v < 1:
        return f"{v * 1000:.0f} ms" if v >= 0.1 else f"{v * 1000:.1f} ms"
    return f"{v:.2f} s"


def fmt_mib(kb):
    return "—" if kb is None else f"{kb / 1024:.1f} MiB"


def ratio(a, b):
    return a / b if (a and b) else None


def fmt_ratio(v):
    return "—" if v is None else (f"{v:.2f}×" if v < 10 else f"{v:.1f}×")


NAMES = {"runbook": "runbook", "libssh2-loop": "libssh2 loop (C)", "ansible": "Ansible", "pyinfra": "pyinfra"}


def smoke_text(cases, s):
    lines = ["| workload | tool | ok | time | peak RSS | reached |", "|---|---|---|---:|---:|---:|"]
    for case in cases:
        for tool in TOOLS:
            v = s.get((case.key, tool))
            if v:
                reached = "—" if v["reached"] is None else f"{v['reached']}/{case.hosts}"
                lines.append(f"| {case.key} | {NAMES[tool]} | {'yes' if v['failed_runs'] == 0 else 'NO'} | "
                             f"{fmt_s(v['median'])} | {fmt_mib(v['maxrss_kb'])} | {reached} |")
    return "\n".join(lines)


def versions():
    def out(argv, env=None):
        try:
            e = dict(E)
            e.update(env or {})
            r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=e)
            return (r.stdout + r.stderr).strip()
        except OSError as e:
            return f"unavailable ({e})"
    v = {}
    v["runbook"] = out([RUNBOOK, "--version"]).splitlines()[0]
    v["ansible"] = out([ANSIBLE_PLAYBOOK, "--version"], ANSIBLE_ENV).splitlines()[0]
    v["pyinfra"] = out([PYINFRA, "--version"]).splitlines()[0]
    try:
        import paramiko  # noqa: F401 (pyinfra's SSH transport, in this venv)
        v["paramiko"] = paramiko.__version__
    except ImportError:
        v["paramiko"] = "?"
    v["libssh2"] = out(["pkg-config", "--modversion", "libssh2"])
    v["openssh"] = out(["ssh", "-V"])
    v["sshd"] = out(["dpkg-query", "-W", "-f", "${Version}", "openssh-server"])
    v["python"] = platform.python_version()
    v["commit"] = out(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", REPO, "diff", "--quiet", "HEAD", "--", "Sources"]).returncode != 0
    if dirty:
        v["commit"] += " (Sources/ modified)"
    build = "release" if "/release/" in os.path.realpath(RUNBOOK) else "debug" if "/debug/" in os.path.realpath(RUNBOOK) else "?"
    v["runbook_build"] = build
    return v


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": f"{mem_kb / 1024 / 1024:.1f} GiB", "kernel": platform.release(),
            "os": platform.freedesktop_os_release().get("PRETTY_NAME", "?") if hasattr(platform, "freedesktop_os_release") else "?"}


def report_text(cases, s, load_before, load_after, n_timed):
    v, m = versions(), machine()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    L = []
    L += ["# runbook against Ansible, pyinfra and a bare libssh2 loop", "",
          f"Produced by `bench/compare` on {date} (commit {v['commit']}): {ROUNDS} rounds, {n_timed} timed runs. What each workload does and how",
          "the figures are taken: `bench/README.md`. Nothing here is asserted by the test suite.", "",
          "## Machine and versions", "",
          f"- {m['cores']} CPUs ({m['cpu']}), {m['memory']} memory, Linux {m['kernel']} ({m['os']})",
          f"- load average before / after: {' '.join(load_before)} / {' '.join(load_after)}",
          f"- runbook: `{v['runbook']}` ({v['runbook_build']} build), over libssh2 {v['libssh2']}",
          f"- Ansible: {v['ansible']} (ssh: {v['openssh']})",
          f"- pyinfra: {v['pyinfra']} (paramiko {v['paramiko']}); Python {v['python']} (Debian's, in bench/.out/venv)",
          f"- libssh2 loop: `bench/libssh2-loop.c` built with `cc -O2` against libssh2 {v['libssh2']}",
          f"- hosts: OpenSSH sshd {v['sshd']} on {address(1)}–{address(NHOSTS)}, port {PORT}, user `{USER}` (shell /bin/sh, no rc),"
          f" ed25519 keys, strict host key checking by every tool"
          + ("; loopback route with `quickack 1`" if QUICKACK else ""),
          ""]
    L += ["## Against SPEC §10", ""]
    verdicts = []

    def med(case, tool):
        x = s.get((case, tool))
        return x["median"] if x else None

    def verdict(text, ok):
        if ok is None:
            verdicts.append(f"| {text} | not measured |")
        else:
            verdicts.append(f"| {text} | {'**met**' if ok else '**not met**'} |")

    def target_ratio(case, num, den, limit, direction, label):
        r = ratio(med(case, num), med(case, den))
        if r is None:
            verdict(f"{label}: —", None)
        else:
            verdict(f"{label}: {fmt_ratio(r)}", r <= limit if direction == "<=" else r >= limit)

    def info_ratio(case, num, den, label):
        r = ratio(med(case, num), med(case, den))
        if r is not None:
            verdicts.append(f"| {label}: {fmt_ratio(r)} | (no target) |")

    if ("W1", "runbook") in s:
        target_ratio("W1", "runbook", "libssh2-loop", 1.3, "<=", "W1 runbook / libssh2 loop ≤ 1.3×")
        target_ratio("W1", "ansible", "runbook", 30, ">=", "W1 Ansible / runbook ≥ 30×")
        target_ratio("W1", "pyinfra", "runbook", 5, ">=", "W1 pyinfra / runbook ≥ 5×")
    if ("W2", "runbook") in s:
        target_ratio("W2", "runbook", "libssh2-loop", 1.3, "<=", "W2 runbook / libssh2 loop ≤ 1.3×")
        info_ratio("W2", "ansible", "runbook", "W2 Ansible / runbook")
        info_ratio("W2", "pyinfra", "runbook", "W2 pyinfra / runbook")
        x = s[("W2", "runbook")]
        verdict(f"W2 runbook peak memory (RSS) < 30 MiB for 20 hosts: {fmt_mib(x['maxrss_kb'])}",
                None if x["maxrss_kb"] is None else x["maxrss_kb"] < 30 * 1024)
    if ("W3-plan", "runbook") in s:
        t = med("W3-plan", "runbook")
        verdict(f"W3 template plan with diff < 0.15 s: {fmt_s(t)}", None if t is None else t < 0.15)
    if ("W3-plan", "runbook") in s:
        info_ratio("W3-plan", "ansible", "runbook", "W3a Ansible / runbook")
        info_ratio("W3-plan", "pyinfra", "runbook", "W3a pyinfra / runbook")
    if ("W4", "runbook") in s:
        info_ratio("W4", "runbook", "libssh2-loop", "W4 runbook / libssh2 loop")
        info_ratio("W4", "ansible", "runbook", "W4 Ansible / runbook")
        info_ratio("W4", "pyinfra", "runbook", "W4 pyinfra / runbook")
        x = s[("W4", "runbook")]
        verdict(f"W4 every one of 100 hosts reached (runbook): {x['reached']}/100 in every run, {x['failed_runs']} failed run(s)",
                x["reached"] == 100 and x["failed_runs"] == 0)
    if ("W5", "runbook") in s:
        t = med("W5", "runbook")
        verdict(f"W5 `runbook --version` < 20 ms: {fmt_s(t)}", None if t is None else t < 0.020)
    if ("W7", "runbook") in s:
        info_ratio("W7", "runbook", "libssh2-loop", "W7 runbook / libssh2 loop")
        info_ratio("W7", "pyinfra", "runbook", "W7 pyinfra / runbook")
        for tool in ("runbook", "libssh2-loop", "pyinfra"):
            x = s.get(("W7", tool))
            if x:
                verdict(f"W7 every one of 500 hosts reached ({NAMES[tool]}): "
                        f"{'—' if x['reached'] is None else x['reached']}/500 in every run, {x['failed_runs']} failed run(s)",
                        x["reached"] == 500 and x["failed_runs"] == 0)
    L += ["| target | |", "|---|---|", *verdicts, ""]
    if not any(c.key == "W7" for c in cases):
        L += ["Not measured in this run: the 500-host fan-out (W7; `--workloads W7`).", ""]

    L += ["## Results", "",
          f"Wall time of the whole process, exec to exit, timed from outside; median, min and max of the successful runs",
          f"({REPS['runbook']} runs per round for runbook and the C loop, 1 for Ansible and pyinfra, rotating the order of the",
          "tools in every round). **peak RSS**: the largest resident set of any one process of the tool's tree, as GNU time's",
          "`%M` reports it (wait4's ru_maxrss; median over the runs). **tree PSS**: the peak of the summed proportional set",
          "size of every process of the tree (Ansible's forked workers and ssh processes included), sampled every 20 ms in",
          "one untimed warm-up run per tool. **peak threads**, **peak fds** (W7): the most threads (`Threads:` in",
          "/proc/PID/status) and open descriptors (entries of /proc/PID/fd) of the tool's own process, sampled every 20 ms",
          "in every run; the largest over the runs. Ratios are each tool's median over runbook's.", ""]
    for case in cases:
        L += [f"### {case.title}", "", case.what, ""]
        head = "| tool | median | min | max | peak RSS | tree PSS (procs) |"
        sep = "|---|---:|---:|---:|---:|---:|"
        if case.watch:
            head += " peak threads | peak fds |"
            sep += "---:|---:|"
        head += " runs ok |"
        sep += "---:|"
        if case.hosts:
            head += " hosts reached / not |"
            sep += "---:|"
        head += " ÷ runbook |"
        sep += "---:|"
        L += [head, sep]
        base = med(case.key, "runbook")
        for tool in TOOLS:
            x = s.get((case.key, tool))
            if not x:
                reason = case.na.get(tool, "not run")
                L.append(f"| {NAMES[tool]} | n/a: {reason} |" + " |" * (6 + (1 if case.hosts else 0) + (2 if case.watch else 0)))
                continue
            tree = "—" if x["tree_pss_kb"] is None else f"{fmt_mib(x['tree_pss_kb'])} ({x['tree_procs']})"
            row = (f"| {NAMES[tool]} | {fmt_s(x['median'])} | {fmt_s(x['min'])} | {fmt_s(x['max'])} | "
                   f"{fmt_mib(x['maxrss_kb'])} | {tree} |")
            if case.watch:
                row += f" {'—' if x['threads'] is None else x['threads']} | {'—' if x['fds'] is None else x['fds']} |"
            row += f" {x['ok']}/{x['runs']} |"
            if case.hosts:
                row += f" {'—' if x['reached'] is None else x['reached']} / {'—' if x['unreached'] is None else x['unreached']} |"
            row += f" {fmt_ratio(ratio(x['median'], base))} |"
            L.append(row)
        notes = [f"{NAMES[t]}: {', '.join(s[(case.key, t)]['notes'])}" for t in TOOLS
                 if (case.key, t) in s and s[(case.key, t)]["notes"]]
        if notes:
            L += ["", "Failures: " + "; ".join(notes)]
        L.append("")
    L += ["## Notes", "",
          "- The machine has 2 cores and may have been shared with other work: compare figures within one run, and",
          "  regenerate them on an idle machine before quoting them. (W4's and W7's hundreds of processes raise the",
          "  load average by themselves.)",
          "- runbook's peak RSS is mostly pages of the binary and the shared libraries it maps (Swift runtime,",
          "  Foundation with ICU data, libcrypto); its heap is a few MiB. A lone process's PSS approaches its RSS when",
          "  no other process maps the same libraries, so tree PSS is comparable across tools within a run, not across",
          "  machines or runs.",
          "- Every tool reaches the hosts over real TCP on loopback, with the same user, key and known_hosts; the hosts",
          "  are this machine, so the remote side's CPU (sshd, sh, Ansible's remote python) competes with the",
          "  controller's for the same 2 cores.",
          f"- Raw results (every run, with its output): `{os.path.relpath(RUN_DIR, REPO)}/` (not kept in git).",
          ""]
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""harness.py - etcdseal side-by-side benchmark (the engine behind bench/bench.sh).

One run starts, all on 127.0.0.1 with free ports: etcd (data dir on tmpfs; a disk data dir too in
the full run), etcd's grpc-proxy, and etcdseal three times (plain = no rules, aesgcm = aesgcm on
every key, kmsv2 = KMS v2 on every key through `etcdseal kms-plugin`). Every workload of etcd's own
`benchmark` tool runs round by round over the endpoints in a fixed order (direct, gproxy, plain,
aesgcm, kmsv2, direct, ...), so machine drift is shared by all of them.

Per run it records the benchmark summary (req/s, p50, p99), the CPU of every process under test
(utime+stime from /proc/PID/stat), the load generator's CPU (rusage of reaped children) and the
machine's busy time (/proc/stat). What is left over ("disturbance") is CPU taken by processes
outside the benchmark: a run where it exceeds --max-disturbance-pct of one core is rerun (up to
--tries attempts); if a run stays disturbed the harness refuses to report (exit 3) unless
BENCH_ALLOW_NOISE=1, in which case the report is written but marked NOISY.

Output: Markdown (one table per workload, a targets table for the aesgcm mode, the per-round
disturbance) written to --out and printed. Exit codes: 0 ok, 2 setup error, 3 refused (noise).
"""
import argparse
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HZ = os.sysconf("SC_CLK_TCK")
ENDPOINTS = ["direct", "gproxy", "plain", "aesgcm", "kmsv2"]
ETCDSEAL_MODES = ["plain", "aesgcm", "kmsv2"]
T0 = time.monotonic()


def log(msg):
    print("[bench %5.1fs] %s" % (time.monotonic() - T0, msg), file=sys.stderr, flush=True)


class SetupError(Exception):
    pass


class Refused(Exception):
    """A run stayed disturbed after every try and BENCH_ALLOW_NOISE is not set: the report would
    be refused anyway, so the harness stops at once instead of spending the rest of the run."""


# ------------------------------------------------------------------------------ /proc readers
def proc_cpu_s(pid):
    """utime+stime of a live process (all threads) in seconds; 0.0 when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / HZ
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_status_kib(pid, field):
    """A kB field of /proc/PID/status (VmHWM, VmRSS), 0 when unreadable."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def sys_jiffies():
    """(busy, idle, steal) seconds of the whole machine from /proc/stat. busy is user+nice+system:
    irq/softirq time is left out because the loopback TCP traffic of the processes under test is
    processed there and charged to no process, so it would count as disturbance."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return ((user + nice + system) / HZ, (idle + iowait) / HZ, steal / HZ)


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# ------------------------------------------------------------------------------ processes
class Proc:
    """A server process we started; stopped by PID only (TERM, then KILL after 5 s)."""

    def __init__(self, name, argv, logdir, env=None):
        self.name = name
        self.logpath = os.path.join(logdir, name + ".log")
        self.logf = open(self.logpath, "wb")
        self.p = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env)
        self.pid = self.p.pid

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.logf.close()


def free_port(taken):
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in taken and port + 1 not in taken:
            taken.add(port)
            return port


def etcdctl(ep, *args, timeout=10, stdin=None):
    env = dict(os.environ, ETCDCTL_API="3")
    return subprocess.run(["etcdctl", "--endpoints", ep, "--dial-timeout", "2s",
                           "--command-timeout", "%ds" % timeout] + list(args),
                          input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=env, timeout=timeout + 5)


def wait_kv(ep, secs, proc=None):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            return False
        try:
            if etcdctl(ep, "get", "--limit", "1", "/bench/ready", timeout=2).returncode == 0:
                return True
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.2)
    return False


# ------------------------------------------------------------------------------ workloads
PUT = "put --key-size 8 --key-space-size 10000 --sequential-keys"
# name: (client args, benchmark command ({N} = total, {P} = endpoint's key prefix),
#        total in the full run, total in the quick run (None = not in quick), what req/s means)
WORKLOADS = [
    ("put256_c1", "--clients 1 --conns 1", PUT + " --val-size 256 --total {N}", 3000, 1000, "puts/s"),
    ("put256_c16", "--clients 16 --conns 8", PUT + " --val-size 256 --total {N}", 15000, None, "puts/s"),
    ("put256_c64", "--clients 64 --conns 8", PUT + " --val-size 256 --total {N}", 20000, 6000, "puts/s"),
    ("put4k_c1", "--clients 1 --conns 1", PUT + " --val-size 4096 --total {N}", 2000, None, "puts/s"),
    ("put4k_c16", "--clients 16 --conns 8", PUT + " --val-size 4096 --total {N}", 12000, None, "puts/s"),
    ("put4k_c64", "--clients 64 --conns 8", PUT + " --val-size 4096 --total {N}", 16000, None, "puts/s"),
    ("rangeL1_c16", "--clients 16 --conns 8", "range {P}r256 --consistency l --total {N}", 15000, 5000,
     "ranges/s"),
    ("rangeL100_c16", "--clients 16 --conns 8", "range {P}m/ {P}m0 --consistency l --total {N}", 4000, 1000,
     "ranges/s (100 keys each)"),
    ("watch", "--clients 4 --conns 4",
     "watch --streams 10 --watch-per-stream 10 --watched-key-total 10 --key-space-size 10 "
     "--sequential-keys --put-rate 1000000 --put-total {N}", 5000, 1000, "events/s"),
    ("watchlat", "--clients 4 --conns 4", "watch-latency --put-rate 500 --val-size 256 --total {N}",
     1000, 200, "puts/s (rate-limited); p50/p99 = put to event"),
]
DISK_WORKLOADS = ["put256_c1", "put256_c64", "put4k_c16"]
DISK_SCALE = 0.3  # fsync on disk makes puts several times slower: smaller totals keep the run bounded

TARGETS = [
    # (label, workload, metric, op, threshold)
    ("put 256 B x64: req/s vs direct", "put256_c64", "ratio", ">=", 0.80),
    ("put 256 B x64: proxy CPU us/req", "put256_c64", "cpu_us", "<=", 30.0),
    ("range linearizable x16: req/s vs direct", "rangeL1_c16", "ratio", ">=", 0.80),
    ("range linearizable x16: proxy CPU us/req", "rangeL1_c16", "cpu_us", "<=", 30.0),
    ("put 256 B x1: added p50 us", "put256_c1", "added_p50_us", "<=", 80.0),
    ("range 100 keys x16: req/s vs direct", "rangeL100_c16", "ratio", ">=", 0.75),
    ("watch events/s vs direct", "watch", "ratio", ">=", 0.80),
    ("RSS MiB at 64 clients (VmHWM after put 256 B x64)", "put256_c64", "rss_mib", "<=", 40.0),
    ("RSS MiB with 10,000 idle watch streams", "idle_watch", "rss_mib", "<=", 200.0),
]


NUM = r"[0-9.]+(?:[eE][-+]?[0-9]+)?"  # --precise prints %g: 1.2e-05


def parse_benchmark(text, workload):
    """Last Summary block of a benchmark output (watch prints a creation summary first)."""
    res = {"rps": None, "total_s": None, "p50": None, "p99": None, "errors": 0}
    for line in text.replace("\r", "\n").splitlines():
        if "Summary:" in line:
            res = {"rps": None, "total_s": None, "p50": None, "p99": None, "errors": 0}
        m = re.match(r"\s*Total:\s+(" + NUM + ")", line)
        if m:
            res["total_s"] = float(m.group(1))
        m = re.match(r"\s*Requests/sec:\s+(" + NUM + ")", line)
        if m:
            res["rps"] = float(m.group(1))
        m = re.match(r"\s*50% in (" + NUM + ") secs", line)
        if m:
            res["p50"] = float(m.group(1))
        m = re.match(r"\s*99% in (" + NUM + ") secs", line)
        if m:
            res["p99"] = float(m.group(1))
        m = re.match(r"\s*\[(\d+)\]", line)
        if m:
            res["errors"] += int(m.group(1))
    if workload == "watch":  # per-event "latency" of the watch command is not a latency
        res["p50"] = res["p99"] = None
    return res


# ------------------------------------------------------------------------------ the bench
class Bench:
    def __init__(self, args):
        self.a = args
        self.work = tempfile.mkdtemp(prefix="etcdseal-bench.")
        self.shm = tempfile.mkdtemp(prefix="etcdseal-bench.", dir="/dev/shm")
        self.logdir = os.path.join(self.work, "logs")
        os.makedirs(self.logdir)
        self.ports = set()
        self.procs = {}  # name -> Proc (servers of the current medium)
        self.plugin = None
        self.runs = []  # dicts, one per kept or discarded attempt
        self.rss = {}  # (medium, workload, endpoint) -> VmHWM MiB after the workload
        self.idle_watch = {}  # endpoint -> figures of the idle watch streams test
        self.noisy_runs = []  # runs still disturbed after all tries
        self.bench_bin = args.benchmark
        self.allow_noise = os.environ.get("BENCH_ALLOW_NOISE") == "1"
        self.failed = False  # keep the work dir (server logs) for the post-mortem

    # ---- setup
    def write_configs(self):
        os.umask(0o077)
        self.etcdseal = os.path.join(self.work, "etcdseal")
        shutil.copy2(self.a.etcdseal, self.etcdseal)  # a rebuild during the run must not change it
        key = subprocess.run(["openssl", "rand", "-base64", "32"], stdout=subprocess.PIPE,
                             check=True).stdout.decode().strip()
        with open(os.path.join(self.work, "aesgcm.yaml"), "w") as f:
            f.write("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n"
                    "resources:\n  - resources: ['*']\n    providers:\n      - aesgcm:\n"
                    "          keys:\n            - name: bench\n              secret: %s\n"
                    "      - identity: {}\n" % key)
        with open(os.path.join(self.work, "kek.bin"), "wb") as f:
            f.write(os.urandom(32))
        self.kms_sock = os.path.join(self.work, "kms.sock")
        with open(os.path.join(self.work, "kmsv2.yaml"), "w") as f:
            f.write("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n"
                    "resources:\n  - resources: ['*']\n    providers:\n      - kms:\n"
                    "          apiVersion: v2\n          name: bench\n"
                    "          endpoint: unix://%s\n          timeout: 3s\n"
                    "      - identity: {}\n" % self.kms_sock)

    def start_plugin(self):
        self.plugin = Proc("kms-plugin", [self.etcdseal, "kms-plugin", "--listen", "unix://" + self.kms_sock,
                                          "--backend", "file", "--key-file",
                                          os.path.join(self.work, "kek.bin")], self.logdir)
        for _ in range(100):
            if os.path.exists(self.kms_sock):
                return
            time.sleep(0.05)
        self.failed = True
        raise SetupError("kms-plugin did not create %s (see %s)" % (self.kms_sock, self.plugin.logpath))

    def start_servers(self, medium):
        self.failed = True  # until every server is up: keep the logs if one does not come up
        data = os.path.join(self.shm if medium == "tmpfs" else self.work, "etcd-" + medium)
        cport, pport, gport = free_port(self.ports), free_port(self.ports), free_port(self.ports)
        self.eps = {"direct": "127.0.0.1:%d" % cport, "gproxy": "127.0.0.1:%d" % gport}
        for m in ETCDSEAL_MODES:
            self.eps[m] = "127.0.0.1:%d" % free_port(self.ports)
        peer = "http://127.0.0.1:%d" % pport
        self.procs["etcd"] = Proc("etcd-" + medium, [
            "etcd", "--name", "bench", "--data-dir", data,
            "--listen-client-urls", "http://" + self.eps["direct"],
            "--advertise-client-urls", "http://" + self.eps["direct"],
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", "bench=" + peer, "--initial-cluster-state", "new",
            "--quota-backend-bytes", "8589934592", "--logger", "zap", "--log-level", "warn"], self.logdir)
        if not wait_kv(self.eps["direct"], 30, self.procs["etcd"]):
            raise SetupError("etcd did not come up (see %s)" % self.procs["etcd"].logpath)
        self.procs["gproxy"] = Proc("gproxy-" + medium, [
            "etcd", "grpc-proxy", "start", "--endpoints=" + self.eps["direct"],
            "--listen-addr=" + self.eps["gproxy"], "--advertise-client-url=" + self.eps["gproxy"],
            "--data-dir", os.path.join(self.work, "gproxy-" + medium)], self.logdir)
        for m in ETCDSEAL_MODES:
            argv = [self.etcdseal, "proxy", "--endpoints", self.eps["direct"], "--listen-addr",
                    self.eps[m], "--log-level", "warn"]
            if m != "plain":
                argv += ["--encryption-provider-config", os.path.join(self.work, m + ".yaml")]
            argv += self.a.proxy_args.split()
            self.procs[m] = Proc("%s-%s" % (m, medium), argv, self.logdir)
        for name in ["gproxy"] + ETCDSEAL_MODES:
            if not wait_kv(self.eps[name], 30, self.procs[name]):
                raise SetupError("%s did not serve a KV get (see %s)" % (name, self.procs[name].logpath))
        log("medium=%s: %s" % (medium, " ".join("%s=%s(pid %d)" % (n, self.eps[n], self.procs[n].pid)
                                                for n in ENDPOINTS if n in self.procs)
                               + " direct=%s" % self.eps["direct"]))
        self.failed = False

    def stop_servers(self):
        for name in list(ETCDSEAL_MODES) + ["gproxy", "etcd"]:
            p = self.procs.pop(name, None)
            if p:
                p.stop()

    def prefix(self, ep):
        # Each endpoint reads keys it wrote itself, so aesgcm/kmsv2 decrypt real ciphertext.
        return "/bench/%s/" % ep

    def seed(self):
        v = "v" * 256
        for ep in ENDPOINTS:
            p = self.prefix(ep)
            lines = ["", "put %sr256 %s" % (p, v)] + ["put %sm/%02d %s" % (p, i, v) for i in range(100)]
            r = etcdctl(self.eps[ep], "txn", stdin=("\n".join(lines) + "\n\n\n").encode(), timeout=30)
            if r.returncode != 0:
                raise SetupError("seeding through %s failed: %s" % (ep, r.stderr.decode()[-300:]))
            r = etcdctl(self.eps[ep], "get", "--prefix", "--limit", "1", "-w", "json", p + "m/")
            if b'"count":100' not in r.stdout:
                raise SetupError("seeding through %s: 100 keys not readable back" % ep)

    def compact_defrag(self):
        r = etcdctl(self.eps["direct"], "endpoint", "status", "-w", "json")
        m = re.search(rb'"revision":(\d+)', r.stdout)
        if m:
            etcdctl(self.eps["direct"], "compact", m.group(1).decode(), "--physical", timeout=60)
            etcdctl(self.eps["direct"], "defrag", timeout=60)

    def our_pids(self):
        pids = {n: p.pid for n, p in self.procs.items()}
        if self.plugin:
            pids["kms-plugin"] = self.plugin.pid
        return pids

    # ---- one measured run
    def run_once(self, medium, wl, ep, rnd, total):
        name, cargs, cmd = wl[0], wl[1], wl[2]
        cmd = cmd.replace("{N}", str(total)).replace("{P}", self.prefix(ep))
        argv = [self.bench_bin, "--endpoints", self.eps[ep], "--precise"] + cargs.split() + cmd.split()
        pids = self.our_pids()
        cpu0 = {n: proc_cpu_s(p) for n, p in pids.items()}
        ch0 = children_cpu_s()
        s0 = sys_jiffies()
        w0 = time.monotonic()
        try:
            p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=self.a.run_timeout)
            out, rc = p.stdout.decode(errors="replace"), p.returncode
        except subprocess.TimeoutExpired as e:
            out, rc = (e.stdout or b"").decode(errors="replace"), -1
        w1 = time.monotonic()
        s1 = sys_jiffies()
        ch1 = children_cpu_s()
        cpu1 = {n: proc_cpu_s(p) for n, p in pids.items()}
        wall = max(w1 - w0, 1e-3)
        d = {n: cpu1[n] - cpu0[n] for n in pids}
        gen = ch1 - ch0
        busy = s1[0] - s0[0]
        ours = sum(d.values()) + gen
        res = parse_benchmark(out, name)
        if rc != 0 or res["rps"] is None:
            with open(os.path.join(self.logdir, "failed-%s-%s-%s-r%d.txt" % (medium, name, ep, rnd)), "w") as f:
                f.write(" ".join(argv) + "\n" + out)
        n_req = int(res["rps"] * res["total_s"] + 0.5) if res["rps"] and res["total_s"] else 0
        mid = 0.0 if ep == "direct" else d.get(ep, 0.0)
        return {
            "medium": medium, "workload": name, "ep": ep, "round": rnd, "rc": rc, "wall": wall,
            "rps": res["rps"], "p50": res["p50"], "p99": res["p99"], "errors": res["errors"],
            "reqs": n_req, "mid_cpu": mid, "etcd_cpu": d.get("etcd", 0.0), "gen_cpu": gen,
            "plugin_cpu": d.get("kms-plugin", 0.0),
            "dist_pct": max(0.0, 100.0 * (busy - ours) / wall),
            "idle_pct": 100.0 * (s1[1] - s0[1]) / wall, "steal_pct": 100.0 * (s1[2] - s0[2]) / wall,
        }

    def check_alive(self, what):
        dead = [n for n, pr in self.procs.items() if not pr.alive()]
        if self.plugin and not self.plugin.alive():
            dead.append("kms-plugin")
        if dead:
            self.failed = True
            logs = [self.procs[n].logpath if n in self.procs else self.plugin.logpath for n in dead]
            raise SetupError("%s exited during %s (logs: %s)" % (", ".join(dead), what, " ".join(logs)))

    def run_one(self, medium, wl, ep, rnd, total):
        for attempt in range(1, self.a.tries + 1):
            r = self.run_once(medium, wl, ep, rnd, total)
            self.check_alive("%s %s via %s round %d" % (medium, wl[0], ep, rnd))
            r["attempt"] = attempt
            r["kept"] = r["dist_pct"] <= self.a.max_disturbance_pct or attempt == self.a.tries
            self.runs.append(r)
            log("  %-6s %-13s %-6s r%d try%d rc=%d req/s=%s p50=%s dist=%.0f%%%s" % (
                medium, wl[0], ep, rnd, attempt, r["rc"], "%.0f" % r["rps"] if r["rps"] else "NA",
                "%.3fms" % (r["p50"] * 1e3) if r["p50"] is not None else "-", r["dist_pct"],
                "" if r["dist_pct"] <= self.a.max_disturbance_pct else " (disturbed)"))
            if r["dist_pct"] <= self.a.max_disturbance_pct:
                return
            if time.monotonic() - T0 > self.a.rerun_budget:
                log("  rerun budget of %.0fs spent: keeping the disturbed run" % self.a.rerun_budget)
                r["kept"] = True
                break
        self.noisy_runs.append(r)
        if not self.allow_noise:
            raise Refused("%s %s via %s round %d: other processes used %.0f%% of a core in the last of "
                          "%d attempts, all above the limit of %.0f%%" % (medium, wl[0], ep, rnd, r["dist_pct"], r["attempt"],
                                                   self.a.max_disturbance_pct))

    def record_rss(self, medium, wname):
        for ep in ["gproxy"] + ETCDSEAL_MODES:
            self.rss[(medium, wname, ep)] = proc_status_kib(self.procs[ep].pid, "VmHWM") / 1024.0

    def idle_watchers(self, ep):
        """Open N idle watch streams through endpoint ep and read its proxy's RSS once all exist."""
        n = self.a.idle_watch_streams
        if n <= 0 or not os.access(self.a.it_watchers, os.X_OK):
            self.idle_watch[ep] = {"skipped": "it_watchers not built or --idle-watch-streams 0"}
            return
        pid = self.procs[ep].pid
        rss0 = proc_status_kib(pid, "VmRSS") / 1024.0
        key = self.prefix(ep) + "idle-watch"
        p = subprocess.Popen([self.a.it_watchers, "-a", self.eps[ep], "-n", str(n), "-c", "10", "-k", key,
                              "-t", "60"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        ready = ""
        for line in p.stdout:
            line = line.decode(errors="replace").strip()
            if line.startswith("READY"):
                ready = line
                break
        created_s = time.monotonic() - t0
        time.sleep(0.5)  # let the proxy settle (buffers of the creation burst)
        rss = proc_status_kib(pid, "VmRSS") / 1024.0
        hwm = proc_status_kib(pid, "VmHWM") / 1024.0
        etcdctl(self.eps[ep], "put", key, "wake")  # every stream must get its event
        try:
            tail = p.communicate(timeout=60)[0].decode(errors="replace").strip()
        except subprocess.TimeoutExpired:
            p.kill()
            tail = p.communicate()[0].decode(errors="replace").strip()
        self.idle_watch[ep] = {"streams": n, "ready": ready, "done": tail.splitlines()[-1] if tail else "",
                               "rc": p.returncode, "rss_before": rss0, "rss_mib": rss, "hwm": hwm,
                               "create_s": created_s}
        log("idle watch via %s: %s; VmRSS %.1f MiB (before %.1f), rc=%d" % (ep, ready, rss, rss0, p.returncode))

    def run(self):
        self.write_configs()
        self.start_plugin()
        media = ["tmpfs"] if self.a.quick else ["tmpfs", "disk"]
        rounds = self.a.rounds
        for medium in media:
            self.start_servers(medium)
            try:
                self.seed()
                for ep in ENDPOINTS:  # warm-up, not recorded
                    subprocess.run([self.bench_bin, "--endpoints", self.eps[ep], "--clients", "8", "--conns", "8",
                                    "put", "--key-space-size", "1000", "--val-size", "256", "--total", "1000"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
                dirty = False
                for wl in WORKLOADS:
                    name, total = wl[0], wl[3] if not self.a.quick else wl[4]
                    if total is None or (medium == "disk" and name not in DISK_WORKLOADS):
                        continue
                    if self.a.workloads and name not in self.a.workloads.split():
                        continue
                    total = max(50, int(total * self.a.scale * (DISK_SCALE if medium == "disk" else 1)))
                    if dirty:
                        self.compact_defrag()
                    log("%s %s (total %d)" % (medium, name, total))
                    for rnd in range(1, rounds + 1):
                        for ep in ENDPOINTS:
                            self.run_one(medium, wl, ep, rnd, total)
                    self.record_rss(medium, name)
                    dirty = name.startswith("put") or name.startswith("watch")
                if medium == "tmpfs":
                    for ep in ("aesgcm", "gproxy"):
                        self.idle_watchers(ep)
            finally:
                self.stop_servers()

    def cleanup(self):
        self.stop_servers()
        if self.plugin:
            self.plugin.stop()
        shutil.rmtree(self.shm, ignore_errors=True)
        if os.environ.get("BENCH_KEEP_WORK") != "1" and not self.failed:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            log("kept work dir %s" % self.work)


# ------------------------------------------------------------------------------ report
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(b):
    """(medium, workload, ep) -> figures over the kept runs."""
    keys = []
    rows = {}
    for r in b.runs:
        k = (r["medium"], r["workload"], r["ep"])
        if k not in rows:
            keys.append(k)
            rows[k] = {"kept": [], "attempts": 0, "failed": 0}
        rows[k]["attempts"] += 1
        if r["kept"]:
            if r["rc"] != 0 or r["rps"] is None:
                rows[k]["failed"] += 1
            else:
                rows[k]["kept"].append(r)
    out = {}
    for k in keys:
        kept = rows[k]["kept"]
        reqs = sum(r["reqs"] for r in kept)
        f = {
            "n": len(kept), "attempts": rows[k]["attempts"], "failed": rows[k]["failed"],
            "rps": med([r["rps"] for r in kept]), "p50": med([r["p50"] for r in kept]),
            "p99": med([r["p99"] for r in kept]), "errors": sum(r["errors"] for r in kept),
            "cpu_us": (sum(r["mid_cpu"] for r in kept) / reqs * 1e6) if reqs and k[2] != "direct" else None,
            "plugin_us": (sum(r["plugin_cpu"] for r in kept) / reqs * 1e6) if reqs and k[2] == "kmsv2" else None,
            "dist_max": max([r["dist_pct"] for r in kept], default=0.0),
            "rss_mib": b.rss.get(k),
        }
        out[k] = f
    # Ratio and added p50 are paired by round (the runs of one round are back to back, so they
    # share the machine's state) and the median is taken over the rounds.
    for k, f in out.items():
        direct = {r["round"]: r for r in rows.get((k[0], k[1], "direct"), {"kept": []})["kept"]}
        ratios, added = [], []
        for r in rows[k]["kept"]:
            d = direct.get(r["round"])
            if not d:
                continue
            if d["rps"] and r["rps"]:
                ratios.append(r["rps"] / d["rps"])
            if d["p50"] is not None and r["p50"] is not None:
                added.append((r["p50"] - d["p50"]) * 1e6)
        f["ratio"] = med(ratios)
        f["added_p50_us"] = med(added)
    return keys, out


def fmt(v, spec, none="-"):
    return none if v is None else format(v, spec)


def report(b, meta, relay_text, noisy):
    keys, s = summarize(b)
    L = []
    L.append("# etcdseal benchmark %s%s" % (meta["date"], " — NOISY (BENCH_ALLOW_NOISE=1)" if noisy else ""))
    L.append("")
    L.append("%s cores, %s; %s; %s run (%d rounds, scale %g); etcdseal commit %s; extra proxy args: `%s`" % (
        meta["cores"], meta["cpu"], meta["etcd"], "quick" if b.a.quick else "full", b.a.rounds, b.a.scale,
        meta["commit"], b.a.proxy_args or "none"))
    L.append("")
    L.append("Endpoints: direct = etcd; gproxy = `etcd grpc-proxy`; plain = etcdseal without rules; "
             "aesgcm = etcdseal, aesgcm on every key; kmsv2 = etcdseal, KMS v2 on every key via "
             "`etcdseal kms-plugin` (file KEK). See docs/benchmarks.md for the columns.")
    if b.a.quick:
        L.append("")
        L.append("Quick run: tmpfs only; workloads put256_c1, put256_c64, rangeL1_c16, rangeL100_c16, watch, "
                 "watchlat with small totals (put 256 B x16, put 4 KiB x1/x16/x64 and the disk medium only in the "
                 "full run); relay micro-benchmark with fewer requests, callgrind in aesgcm mode only.")
    if noisy:
        L.append("")
        L.append("**NOISY: %d run(s) stayed above %.0f%% disturbance after %d tries; figures are contaminated.**"
                 % (len(b.noisy_runs), b.a.max_disturbance_pct, b.a.tries))
    wl_desc = {w[0]: (w[1], w[2], w[5]) for w in WORKLOADS}
    seen = []
    for k in keys:
        if (k[0], k[1]) not in seen:
            seen.append((k[0], k[1]))
    for medium, wname in seen:
        cargs, cmd, unit = wl_desc[wname]
        L.append("")
        L.append("## %s — %s" % (medium, wname))
        L.append("")
        L.append("`benchmark %s %s` — req/s = %s" % (cargs, cmd.replace("{N}", "N").replace("{P}", "/bench/<ep>/"),
                                                     unit))
        L.append("")
        L.append("| via | rounds | req/s | p50 ms | p99 ms | x direct | added p50 us | proxy CPU us/req "
                 "| peak RSS MiB | max dist % | notes |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for ep in ENDPOINTS:
            f = s.get((medium, wname, ep))
            if not f:
                continue
            notes = []
            if f["failed"]:
                notes.append("%d failed runs" % f["failed"])
            if f["errors"]:
                notes.append("%d request errors" % f["errors"])
            if f["attempts"] > b.a.rounds:
                notes.append("%d reruns" % (f["attempts"] - b.a.rounds))
            if f["plugin_us"] is not None:
                notes.append("kms-plugin %.1f us/req" % f["plugin_us"])
            L.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %.0f | %s |" % (
                ep, f["n"], fmt(f["rps"], ".0f"), fmt(None if f["p50"] is None else f["p50"] * 1e3, ".3f"),
                fmt(None if f["p99"] is None else f["p99"] * 1e3, ".3f"), fmt(f["ratio"], ".2f"),
                "-" if ep == "direct" else fmt(f["added_p50_us"], "+.0f"), fmt(f["cpu_us"], ".1f"),
                fmt(f["rss_mib"], ".1f"), f["dist_max"], "; ".join(notes)))
    # targets
    L.append("")
    L.append("## Targets (issue 7; tmpfs, aesgcm on every key, same run)")
    L.append("")
    L.append("| target | aesgcm | etcd grpc-proxy | threshold | result |")
    L.append("|---|---|---|---|---|")
    for label, wname, metric, op, thr in TARGETS:
        if wname == "idle_watch":
            iw, ig = b.idle_watch.get("aesgcm", {}), b.idle_watch.get("gproxy", {})
            v = iw.get("rss_mib") if iw.get("rc") == 0 else None
            g = ig.get("rss_mib") if ig.get("rc") == 0 else None
        else:
            f = s.get(("tmpfs", wname, "aesgcm"))
            v = f[metric] if f else None
            fg = s.get(("tmpfs", wname, "gproxy"))
            g = fg[metric] if fg else None
        if v is None:
            res = "n/a (not measured)"
        else:
            ok = v >= thr if op == ">=" else v <= thr
            res = "PASS" if ok else "MISS"
        L.append("| %s | %s | %s | %s %g | %s |" % (label, fmt(v, ".2f"), fmt(g, ".2f"), op, thr, res))
    for ep, iw in b.idle_watch.items():
        L.append("")
        if "skipped" in iw:
            L.append("Idle watch streams via %s: skipped (%s)." % (ep, iw["skipped"]))
        else:
            L.append("Idle watch streams via %s: %d streams over 10 connections (build/tools/it_watchers); "
                     "`%s` after %.1f s; VmRSS %.1f MiB with them open (%.1f MiB before, VmHWM %.1f); "
                     "`%s` (exit %d)." % (ep, iw["streams"], iw["ready"], iw["create_s"], iw["rss_mib"],
                                          iw["rss_before"], iw["hwm"], iw["done"], iw["rc"]))
    if relay_text:
        L.append("")
        L.append("## Relay micro-benchmark (no etcd; build/tools/bench_relay)")
        L.append("")
        L.append("```")
        L.append(relay_text.rstrip())
        L.append("```")
    # disturbance per round
    L.append("")
    L.append("## Disturbance per run (%% of one core used by processes outside the benchmark; rerun above %.0f%%)"
             % b.a.max_disturbance_pct)
    L.append("")
    L.append("```")
    cur = None
    line = ""
    for r in b.runs:
        head = "%s %s r%d:" % (r["medium"], r["workload"], r["round"])
        if head != cur:
            if line:
                L.append(line)
            cur, line = head, "%-28s" % head
        line += " %s=%.0f%s" % (r["ep"], r["dist_pct"], "" if r["kept"] else "(rerun)")
    if line:
        L.append(line)
    L.append("```")
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--workloads", default="", help="space-separated subset of workload names")
    ap.add_argument("--tries", type=int, default=3, help="attempts per run when disturbed")
    ap.add_argument("--max-disturbance-pct", type=float, default=25.0)
    ap.add_argument("--run-timeout", type=float, default=60.0)
    ap.add_argument("--rerun-budget", type=float, default=720.0,
                    help="no reruns after this many seconds since the start (keeps the run bounded)")
    ap.add_argument("--idle-watch-streams", type=int, default=10000)
    ap.add_argument("--benchmark", required=True)
    ap.add_argument("--etcdseal", default="build/etcdseal")
    ap.add_argument("--it-watchers", default="build/tools/it_watchers")
    ap.add_argument("--proxy-args", default="", help="extra flags for every etcdseal proxy")
    ap.add_argument("--relay-results", default="", help="file with the relay micro-benchmark output")
    ap.add_argument("--out", required=True)
    ap.add_argument("--meta", nargs=5, metavar=("DATE", "CORES", "CPU", "ETCD", "COMMIT"), required=True)
    a = ap.parse_args()
    allow_noise = os.environ.get("BENCH_ALLOW_NOISE") == "1"
    b = Bench(a)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        b.run()
    except SetupError as e:
        log("ERROR: %s" % e)
        return 2
    except Refused as e:
        log("REFUSED: %s. The machine is busy: rerun when it is quiet (check top), or set BENCH_ALLOW_NOISE=1 "
            "for a report marked NOISY. No report written." % e)
        return 3
    except KeyboardInterrupt:
        return 130
    finally:
        b.cleanup()
    relay_text = ""
    if a.relay_results and os.path.exists(a.relay_results):
        with open(a.relay_results) as f:
            relay_text = f.read()
    meta = dict(zip(["date", "cores", "cpu", "etcd", "commit"], a.meta))
    noisy = bool(b.noisy_runs)
    text = report(b, meta, relay_text, noisy)
    if noisy and not allow_noise:
        with open(a.out + ".tmp", "w") as f:
            f.write(text)
        log("REFUSED: %d run(s) were still disturbed (> %.0f%% of a core used by other processes) after %d tries; "
            "not writing %s (draft in %s.tmp). Rerun on a quiet machine, or set BENCH_ALLOW_NOISE=1 to write a "
            "report marked NOISY." % (len(b.noisy_runs), a.max_disturbance_pct, a.tries, a.out, a.out))
        return 3
    with open(a.out, "w") as f:
        f.write(text)
    print(text)
    log("written to %s" % a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

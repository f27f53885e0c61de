#!/usr/bin/env python3
"""Memory held by idle keep-alive client connections, and whether it comes back after they close.

For each proxy (one or more sessiongate binaries, optionally nginx) and each size N, in one run:

1. start the proxy afresh (the load benchmark's stand-ins, `benches/load/stub`, are the upstream and
   the Kratos whoami stand-in), warm its session cache with `--tokens` tokens over one connection;
2. read VmRSS of the proxy's process tree: the *baseline*;
3. open N keep-alive connections, each sending one request to the anonymous route and one to the
   session route (a warm token), keep them open and idle, wait `--settle` s, read VmRSS: *idle*;
4. close them, wait `--after` s (10), read VmRSS: *after*.

It prints (idle - baseline) / N as KiB per idle connection, after / baseline, and VmHWM. With
`--burst`, every proxy also gets the load benchmark's cold burst (`sessiongate-loadstub burst`:
1,000 fresh tokens x 20 connections by waves of 250 tokens) in a fresh process, and its peak RSS
(VmHWM) is reported next to nginx's.

Variants: `--sg NAME=PATH` (repeatable) names a sessiongate binary; `--env NAME:KEY=VALUE`
(repeatable) adds an environment variable to that variant only (configuration overrides
`SESSIONGATE__SERVER__...`, allocator options `MIMALLOC_...`); `--env NAME=OTHER` is not a thing:
give the same binary twice under two names instead. Cases run interleaved (every variant for a
size, then the next size), `--runs` times.

Everything stays on 127.0.0.1 (ports from `--port-base`, 22000 by default, so that it can run next to
`benches/load/run.sh`), every wait is bounded, and every process started is stopped by its pid.
Nothing is built here: `cargo build --release --bin sessiongate` and
`cargo build --release --manifest-path benches/load/stub/Cargo.toml` first (see README.md).
"""

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
LOAD = os.path.join(ROOT, "benches", "load")


def log(msg):
    print(f"[memory {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# /proc
# ------------------------------------------------------------------------------------------------


def proc_tree(pid):
    """pid and its descendants (nginx: master + worker)."""
    out, todo = [], [pid]
    while todo and len(out) < 64:
        p = todo.pop()
        if not os.path.isdir(f"/proc/{p}"):
            continue
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo.extend(int(c) for c in fh.read().split())
        except OSError:
            pass
    return out


def status_kb(pid, field):
    """Sum of a /proc/<pid>/status field (VmRSS, VmHWM) over the tree, in KiB."""
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


# ------------------------------------------------------------------------------------------------
# HTTP/1.1 client (blocking sockets, bounded by socket timeouts)
# ------------------------------------------------------------------------------------------------


def request(host, path, token=None):
    head = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: idle.py\r\nAccept: */*\r\n"
    if token:
        head += f"X-Session-Token: {token}\r\n"
    return (head + "\r\n").encode()


def read_response(sock):
    """Reads one response with a Content-Length body; returns the status code."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
        if len(buf) > 1 << 20:
            raise ConnectionError("response head too large")
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        if name.strip().lower() == "transfer-encoding":
            raise ConnectionError("chunked answers are not expected here")
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    return status


def exchange(sock, host, path, token=None):
    sock.sendall(request(host, path, token))
    return read_response(sock)


def wait_status(host, port, path, want, secs=30):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                if exchange(s, f"{host}:{port}", path) == want:
                    return True
        except (OSError, ValueError, IndexError):
            pass
        time.sleep(0.1)
    return False


# ------------------------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------------------------


class Procs:
    """Processes this script started; stopped by pid (also on Ctrl-C and errors)."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.live = {}

    def spawn(self, name, argv, env=None):
        logf = open(os.path.join(self.run_dir, f"{name}.log"), "wb")
        p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=self.run_dir)
        self.live[p.pid] = (p, logf)
        return p

    def stop(self, p, sig=signal.SIGTERM):
        if p.pid not in self.live:
            return
        try:
            p.send_signal(sig)
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
        except ProcessLookupError:
            pass
        _, logf = self.live.pop(p.pid)
        logf.close()

    def stop_all(self):
        for p, _ in list(self.live.values()):
            self.stop(p, signal.SIGKILL)


def render(template, out, values):
    with open(template) as fh:
        text = fh.read()
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    with open(out, "w") as fh:
        fh.write(text)


class Bench:
    def __init__(self, args, procs, run_dir, cache_dir):
        self.args = args
        self.procs = procs
        self.run_dir = run_dir
        self.cache_dir = cache_dir
        base = args.port_base
        self.upstream, self.whoami = f"127.0.0.1:{base}", f"127.0.0.1:{base + 1}"
        self.sg_port, self.sg_admin, self.nginx_port = base + 10, base + 11, base + 20
        self.values = {
            "RUN": run_dir,
            "CACHE_DIR": os.path.join(cache_dir, "nginx-cache"),
            "UPSTREAM": self.upstream,
            "WHOAMI": self.whoami,
            "THREADS": 1,
            "DECISIONS": "# no decision API",
            # nginx's /authsg/ location (the load benchmark's nginx-authreq-sg-1k): unused here
            "SG_DECISIONS": f"127.0.0.1:{args.port_base + 12}",
            "MAX_ENTRIES": 2000000,
            "MAX_TTL": "600s",
            "NEGATIVE_TTL": "5s",
        }

    def start_stub(self):
        p = self.procs.spawn(
            "stub",
            [self.args.stub, "serve", "--upstream", self.upstream, "--whoami", self.whoami,
             "--threads", "2"],
        )
        if not wait_status("127.0.0.1", self.args.port_base + 1, "/__count", 200, 10):
            raise SystemExit("the stand-ins did not start (see the stub log)")
        return p

    def start_proxy(self, variant):
        """Starts one proxy; returns (process, host:port, anonymous path, session path)."""
        kind, name = variant["kind"], variant["name"]
        if kind == "nginx":
            os.makedirs(os.path.join(self.run_dir, "nginx-tmp"), exist_ok=True)
            shutil.rmtree(self.values["CACHE_DIR"], ignore_errors=True)
            conf = os.path.join(self.run_dir, "nginx.conf")
            render(os.path.join(LOAD, "peers", "nginx.conf.in"), conf,
                   dict(self.values, LISTEN_PORT=self.nginx_port))
            err = os.path.join(self.run_dir, "nginx-error.log")
            p = self.procs.spawn(name, [self.args.nginx, "-p", self.run_dir, "-e", err, "-c", conf])
            if not wait_status("127.0.0.1", self.nginx_port, "/plain/ready", 200):
                raise SystemExit("nginx did not start")
            return p, f"127.0.0.1:{self.nginx_port}", "/plain/x", "/authcache/x"
        conf = os.path.join(self.run_dir, "sessiongate.toml")
        render(os.path.join(LOAD, "sessiongate.toml.in"), conf,
               dict(self.values, LISTEN_PORT=self.sg_port, ADMIN_PORT=self.sg_admin))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("SESSIONGATE__") and not k.startswith("MIMALLOC_")}
        env.update(variant["env"])
        p = self.procs.spawn(name, [variant["path"], "--config", conf, "run"], env=env)
        if not wait_status("127.0.0.1", self.sg_admin, "/health/ready", 200):
            raise SystemExit(f"{name} did not become ready (see its log in {self.run_dir})")
        return p, f"127.0.0.1:{self.sg_port}", "/anon/x", "/api/x"

    def stop_proxy(self, variant, p):
        # sessiongate: SIGINT stops at once (SIGTERM drains); nginx: SIGTERM is a fast stop.
        self.procs.stop(p, signal.SIGTERM if variant["kind"] == "nginx" else signal.SIGINT)

    def idle_case(self, variant, n, run):
        p, hostport, anon, sess = self.start_proxy(variant)
        host, port = hostport.split(":")
        port = int(port)
        tokens = [f"idle-{run}-{i}" for i in range(self.args.tokens)]
        socks = []
        errors = 0
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                for t in tokens:  # warm the session cache (and nginx's proxy_cache)
                    exchange(s, hostport, sess, t)
                exchange(s, hostport, anon)
            time.sleep(self.args.settle)
            baseline = status_kb(p.pid, "VmRSS")
            t0 = time.monotonic()
            for i in range(n):
                try:
                    s = socket.create_connection((host, port), timeout=5)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    socks.append(s)
                    a = exchange(s, hostport, anon)
                    b = exchange(s, hostport, sess, tokens[i % len(tokens)])
                    if a != 200 or b != 200:
                        errors += 1
                except (OSError, ConnectionError, ValueError, IndexError):
                    errors += 1
            opened = time.monotonic() - t0
            time.sleep(self.args.settle)
            idle = status_kb(p.pid, "VmRSS")
            hwm = status_kb(p.pid, "VmHWM")
            for s in socks:
                s.close()
            socks = []
            time.sleep(self.args.after)
            after = status_kb(p.pid, "VmRSS")
        finally:
            for s in socks:
                s.close()
            self.stop_proxy(variant, p)
        return {
            "case": "idle", "proxy": variant["name"], "connections": n, "run": run,
            "baseline_kb": baseline, "idle_kb": idle, "after_kb": after, "hwm_kb": hwm,
            "kb_per_conn": (idle - baseline) / n, "after_over_baseline": after / baseline,
            "errors": errors, "open_secs": round(opened, 2),
        }

    def burst_case(self, variant, run):
        p, hostport, _, _ = self.start_proxy(variant)
        path = "/authcache/burst" if variant["kind"] == "nginx" else "/api/burst"
        try:
            baseline = status_kb(p.pid, "VmRSS")
            out = subprocess.run(
                [self.args.stub, "burst", "--target", hostport, "--path", path,
                 "--tokens", str(self.args.burst_tokens), "--fanout", str(self.args.burst_fanout),
                 "--wave", str(self.args.burst_wave), "--prefix", f"burst-{run}-{time.time_ns()}",
                 "--stats", self.whoami],
                capture_output=True, text=True, timeout=300, check=False)
            hwm = status_kb(p.pid, "VmHWM")
            time.sleep(self.args.after)
            after = status_kb(p.pid, "VmRSS")
        finally:
            self.stop_proxy(variant, p)
        try:
            client = json.loads(out.stdout)
        except ValueError:
            client = {"error": out.stderr[-500:]}
        return {
            "case": "burst", "proxy": variant["name"], "run": run, "baseline_kb": baseline,
            "hwm_kb": hwm, "after_kb": after, "after_over_baseline": after / baseline,
            "client": {k: client.get(k) for k in ("requests", "ok", "errors", "whoami_calls",
                                                   "status", "error") if k in client},
        }


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def report(results, variants, sizes, after):
    lines = [f"| proxy | idle connections | KiB per idle connection | RSS baseline -> idle -> {after:g} s after close (MiB) | after / baseline | runs | errors |",
             "|---|---:|---:|---|---:|---:|---:|"]
    for n in sizes:
        for v in variants:
            rows = [r for r in results if r["case"] == "idle" and r["proxy"] == v["name"]
                    and r["connections"] == n]
            if not rows:
                continue
            per = ", ".join(f"{r['kb_per_conn']:.1f}" for r in rows)
            lines.append(
                f"| {v['name']} | {n:,} | {med(rows, 'kb_per_conn'):.1f} ({per}) | "
                f"{med(rows, 'baseline_kb') / 1024:.1f} -> {med(rows, 'idle_kb') / 1024:.1f} -> "
                f"{med(rows, 'after_kb') / 1024:.1f} | {med(rows, 'after_over_baseline'):.2f} | "
                f"{len(rows)} | {sum(r['errors'] for r in rows)} |")
    bursts = [r for r in results if r["case"] == "burst"]
    if bursts:
        lines += ["", f"| proxy | cold burst peak RSS (MiB) | baseline -> {after:g} s after (MiB) | runs | client |",
                  "|---|---:|---|---:|---|"]
        for v in variants:
            rows = [r for r in bursts if r["proxy"] == v["name"]]
            if rows:
                lines.append(
                    f"| {v['name']} | {med(rows, 'hwm_kb') / 1024:.1f} | "
                    f"{med(rows, 'baseline_kb') / 1024:.1f} -> {med(rows, 'after_kb') / 1024:.1f} | "
                    f"{len(rows)} | {json.dumps(rows[-1]['client'])} |")
    return "\n".join(lines)


def parse_variants(args):
    variants, order = {}, []
    for spec in args.sg or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--sg {spec}: expected NAME=PATH")
        if not os.access(path, os.X_OK):
            raise SystemExit(f"--sg {spec}: {path} is not executable")
        variants[name] = {"name": name, "kind": "sg", "path": os.path.abspath(path), "env": {}}
        order.append(name)
    for spec in args.env or []:
        name, sep, kv = spec.partition(":")
        key, sep2, value = kv.partition("=")
        if not sep or not sep2 or name not in variants:
            raise SystemExit(f"--env {spec}: expected NAME:KEY=VALUE for a --sg NAME")
        variants[name]["env"][key] = value
    if not variants:
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        path = os.path.join(target, "release", "sessiongate")
        variants["sessiongate"] = {"name": "sessiongate", "kind": "sg", "path": path, "env": {}}
        order.append("sessiongate")
    out = [variants[n] for n in order]
    if args.nginx:
        out.append({"name": "nginx", "kind": "nginx", "path": args.nginx, "env": {}})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sg", action="append", help="NAME=PATH of a sessiongate binary (repeatable)")
    ap.add_argument("--env", action="append", help="NAME:KEY=VALUE environment of variant NAME")
    ap.add_argument("--sizes", default="1000,3000", help="idle connection counts (default 1000,3000)")
    ap.add_argument("--runs", type=int, default=1, help="repeat every case (interleaved)")
    ap.add_argument("--tokens", type=int, default=100, help="warm session tokens")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds before reading RSS")
    ap.add_argument("--after", type=float, default=10.0, help="seconds after closing")
    ap.add_argument("--no-nginx", action="store_true", help="leave nginx out")
    ap.add_argument("--burst", action="store_true", help="also run the cold burst per proxy")
    ap.add_argument("--burst-tokens", type=int, default=1000)
    ap.add_argument("--burst-fanout", type=int, default=20)
    ap.add_argument("--burst-wave", type=int, default=250)
    ap.add_argument("--port-base", type=int, default=22000)
    ap.add_argument("--stub", default=os.environ.get(
        "STUB_BIN", os.path.join(LOAD, "stub", "target", "release", "sessiongate-loadstub")))
    ap.add_argument("--json", help="write every case as JSON to this file")
    args = ap.parse_args()
    args.nginx = None if args.no_nginx else shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if not os.access(args.stub, os.X_OK):
        raise SystemExit(f"no stand-in binary at {args.stub} (build benches/load/stub, or --stub)")
    variants = parse_variants(args)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if not sizes or min(sizes) < 1 or max(sizes) > 15000 or not 1 <= args.runs <= 20:
        raise SystemExit("sizes must be 1..15000 and runs 1..20")

    # Every idle connection is a descriptor here and in the proxy (which inherits the limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # (each process has its own limit: this one holds the idle sockets, the burst client its own)
    want = max(max(sizes), args.burst_wave * args.burst_fanout if args.burst else 0) + 1000
    if hard != resource.RLIM_INFINITY and hard < want:
        log(f"warning: the descriptor limit {hard} is below {want}; large cases may fail")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else want, hard))

    run_dir = tempfile.mkdtemp(prefix="sessiongate-memory.")
    os.chmod(run_dir, 0o755)  # nginx's worker is unprivileged
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    cache_dir = tempfile.mkdtemp(prefix="sessiongate-memory.", dir=shm)
    os.chmod(cache_dir, 0o755)
    procs = Procs(run_dir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = []
    try:
        bench = Bench(args, procs, run_dir, cache_dir)
        bench.start_stub()
        for run in range(1, args.runs + 1):
            for n in sizes:
                for v in variants:
                    log(f"run {run}: {v['name']}, {n} idle connections")
                    r = bench.idle_case(v, n, run)
                    log(f"  {r['kb_per_conn']:.1f} KiB/connection, after/baseline "
                        f"{r['after_over_baseline']:.2f}, errors {r['errors']}")
                    results.append(r)
            if args.burst:
                for v in variants:
                    log(f"run {run}: {v['name']}, cold burst")
                    r = bench.burst_case(v, run)
                    log(f"  peak {r['hwm_kb'] / 1024:.1f} MiB, client {r['client']}")
                    results.append(r)
    finally:
        procs.stop_all()
        if os.environ.get("KEEP_RUN") == "1":
            log(f"kept {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(cache_dir, ignore_errors=True)
    print(report(results, variants, sizes, args.after))
    print(f"\n{os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"variants": variants, "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Result handling for benches/load/run.sh (standard library, plus matplotlib for the chart).

  report.py record --name ... (see run.sh)       one case -> one JSON line on stdout
  report.py oneline < case.json                  one-line summary for the log
  report.py render CASES.jsonl OUTDIR ENV VERS   results.md, results.json, chart.png; prints the table
  report.py memory MEM.jsonl OUTDIR ENV VERS     memory.md, memory.json; prints the table
"""

import argparse
import json
import os
import sys

# ---------------------------------------------------------------------------------------------
# record
# ---------------------------------------------------------------------------------------------


def parse_wrk(path):
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError:
        return None, ""
    for line in text.splitlines():
        if line.startswith("JSON:"):
            return json.loads(line[5:]), text
    return None, text


def record(argv):
    p = argparse.ArgumentParser(prog="report.py record")
    for k in ["name", "proxy", "url", "kind", "desc", "probe", "noauth", "wrk", "burst", "stats",
              "threads", "hwm-kib", "loadgen-time"]:
        p.add_argument("--" + k, default="")
    for k in ["tokens", "auth", "ticks", "clk", "time-wait", "alive", "connections", "busy-ticks",
              "stub-ticks", "window-ms"]:
        p.add_argument("--" + k, type=int, default=0)
    p.add_argument("--noise-max", type=float, default=0.2)
    a = p.parse_args(argv)

    rec = {
        "name": a.name, "proxy": a.proxy, "url": a.url, "tokens": a.tokens, "kind": a.kind,
        "description": a.desc, "auth_route": bool(a.auth), "probe_status": a.probe,
        "unauthenticated_probe_status": a.noauth if a.auth else None,
        "time_wait_at_start": getattr(a, "time_wait"),
    }
    problems, notes = [], []
    stats = json.loads(a.stats) if a.stats else {}
    rec["standins"] = stats

    if a.kind == "wrk":
        w, raw = parse_wrk(a.wrk)
        if w is None:
            problems.append("wrk printed no result: " + " ".join(raw.split())[:200])
            w = {"requests": 0, "duration_us": 1, "errors": {}, "latency_us": {}}
        secs = max(w["duration_us"], 1) / 1e6
        requests = w["requests"]
        e = w.get("errors", {})
        non2xx = e.get("status", 0)
        sock = sum(e.get(k, 0) for k in ("connect", "read", "write", "timeout"))
        lat = w.get("latency_us", {})
        rec.update({
            "requests": requests, "seconds": round(secs, 3), "rps": round(requests / secs, 1),
            "latency_ms": {k: round(lat.get(k, 0) / 1000, 3) for k in ("p50", "p90", "p99", "max")},
            "non2xx": non2xx, "socket_errors": {k: e.get(k, 0) for k in ("connect", "read", "write", "timeout")},
        })
        if non2xx:
            problems.append(f"{non2xx} non-2xx responses")
        if sock:
            problems.append("socket errors " + ", ".join(f"{k}={v}" for k, v in rec["socket_errors"].items() if v))
    else:
        b = json.loads(a.burst) if a.burst else {"error": "no output"}
        rec["burst"] = b
        if "error" in b:
            problems.append("burst client: " + b["error"])
            b = {}
        requests = b.get("requests", 0)
        secs = max(b.get("seconds", 0.0), 1e-9)
        lat = b.get("latency_us", {})
        rec.update({
            "requests": requests, "seconds": round(secs, 3), "rps": None,
            "latency_ms": {k: round(lat.get(k, 0) / 1000, 3) for k in ("p50", "p90", "p99", "max")},
            "non2xx": b.get("non2xx", 0), "socket_errors": {"total": b.get("errors", 0)},
        })
        if b.get("non2xx"):
            problems.append(f"{b['non2xx']} non-2xx responses {b.get('statuses')}")
        if b.get("errors"):
            problems.append(f"{b['errors']} failed requests {b.get('error_kinds')}")
        want = b.get("tokens")
        if b and b.get("whoami_calls") != want:
            problems.append(f"expected exactly {want} whoami calls, counted {b.get('whoami_calls')}")

    # Stand-in counters over the measured window.
    whoami = stats.get("whoami_calls", 0)
    up = stats.get("upstream_requests", 0)
    rec["whoami_calls"] = whoami
    rec["whoami_per_request"] = round(whoami / requests, 4) if requests else None
    # The __stats call that read the counters is itself one new connection to the whoami port.
    rec["new_connections"] = {"app": stats.get("upstream_connections", 0),
                              "auth": max(stats.get("whoami_connections", 0) - 1, 0)}
    if a.auth and up:
        frac = stats.get("upstream_with_identity", 0) / up
        rec["identity_forwarded"] = round(frac, 4)
        if frac < 0.999:
            problems.append(f"identity header missing on {100 * (1 - frac):.1f}% of upstream requests")
    if requests and up and a.kind == "wrk" and abs(up - requests) > max(a.connections * 2, requests * 0.01):
        notes.append(f"upstream saw {up} requests for {requests} answered")

    # Probes.
    if a.probe != "200":
        problems.append(f"probe with a credential got {a.probe}")
    if a.auth and a.noauth != "401":
        problems.append(f"probe without a credential got {a.noauth} (auth not enforced?)")

    # The proxy process.
    if a.proxy != "none":
        cpu_s = a.ticks / max(a.clk, 1)
        rec["proxy_cpu_seconds"] = round(cpu_s, 2)
        rec["cpu_us_per_request"] = round(cpu_s * 1e6 / requests, 2) if requests else None
        rec["proxy_cpu_util"] = round(cpu_s / secs, 3) if a.kind == "wrk" else None
        rec["peak_rss_mib"] = round(int(a.hwm_kib or 0) / 1024, 1)
        rec["processes_threads"] = a.threads
        if not a.alive:
            problems.append("proxy process died during the run")
        # Connection reuse: after the warm-up, a pooling proxy opens (almost) no new connections.
        if a.kind == "wrk":
            for which, n in rec["new_connections"].items():
                if n > 4 * a.connections:
                    notes.append(f"no connection reuse to {which}: {n} new connections "
                                 f"({1000 * n / max(requests, 1):.1f} per 1k requests)")
    else:
        rec.update({"proxy_cpu_seconds": None, "cpu_us_per_request": None, "proxy_cpu_util": None,
                    "peak_rss_mib": None, "processes_threads": None})

    # Everything else the machine did meanwhile: /proc/stat busy time minus the proxy, the
    # stand-ins and the load generator. A build running beside the benchmark shows up here.
    clk = max(a.clk, 1)
    window = max(a.window_ms, 1) / 1000
    try:
        u, s_ = (float(x) for x in a.loadgen_time.split()[:2])
        loadgen = u + s_
    except ValueError:
        loadgen = 0.0
    ours = a.ticks / clk + a.stub_ticks / clk + loadgen
    foreign = max(a.busy_ticks / clk - ours, 0.0)
    rec["cpu_seconds"] = {"proxy": round(a.ticks / clk, 2), "standins": round(a.stub_ticks / clk, 2),
                          "loadgen": round(loadgen, 2), "machine_total": round(a.busy_ticks / clk, 2),
                          "others": round(foreign, 2), "window_s": round(window, 2)}
    rec["other_processes_cores"] = round(foreign / window, 2)
    if foreign / window > a.noise_max:
        problems.append(f"other processes used {foreign / window:.2f} cores during the run")

    rec["valid"] = not problems
    rec["problems"] = problems
    rec["notes"] = notes
    print(json.dumps(rec))


def fmt(v, nd=1):
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def oneline(_argv):
    r = json.loads(sys.stdin.read())
    lat = r["latency_ms"]
    status = "ok" if r["valid"] else "INVALID: " + "; ".join(r["problems"])
    if r["notes"]:
        status += " | note: " + "; ".join(r["notes"])
    rps = "—" if r["rps"] is None else f"{r['rps']:,.0f} req/s"
    print(f"    {r['name']}: {rps}, p50 {lat['p50']} ms, p99 {lat['p99']} ms, "
          f"{r['requests']:,} req, whoami/req {r['whoami_per_request']}, "
          f"cpu {r.get('cpu_us_per_request')} us/req, rss {r.get('peak_rss_mib')} MiB — {status}")


# ---------------------------------------------------------------------------------------------
# render
# ---------------------------------------------------------------------------------------------


def load_jsonl(path):
    with open(path) as fh:
        return [json.loads(l) for l in fh if l.strip()]


def by_name(cases):
    return {c["name"]: c for c in cases}


def ratio(a, b, key, better="higher"):
    va, vb = a.get(key), b.get(key)
    if va is None or vb is None or vb == 0:
        return None
    return va / vb


def ratios_md(cases):
    c = by_name(cases)
    pairs = [
        ("sg-session-1tok", "bare-pingora", "sessiongate session (warm cache, 1 token) vs bare pingora (the floor)"),
        ("sg-session-1k", "bare-pingora", "sessiongate session (warm cache, 1k tokens) vs bare pingora (the floor)"),
        ("sg-anon", "bare-pingora", "sessiongate anonymous vs bare pingora (the floor)"),
        ("bare-pingora", "nginx-plain", "bare pingora vs nginx plain proxy"),
        ("sg-session-1k", "nginx-authreq-cache-1k", "sessiongate session (warm cache, 1k tokens) vs nginx auth_request + proxy_cache"),
        ("sg-session-1k", "sg-anon", "sessiongate session (warm cache, 1k tokens) vs its own anonymous route"),
        ("sg-session-1tok", "sg-anon", "sessiongate session (warm cache, 1 token) vs its own anonymous route"),
        ("sg-anon", "direct", "sessiongate anonymous vs the upstream directly"),
        ("sg-anon", "nginx-plain", "sessiongate anonymous vs nginx plain proxy"),
        ("sg-nocache-1k", "nginx-authreq-1k", "sessiongate without cache vs nginx auth_request without cache"),
        ("nginx-authreq-sg-1k", "nginx-authreq-1k", "nginx auth_request to sessiongate's decision API (cached) vs to whoami directly (no cache)"),
        ("nginx-authreq-sg-1k", "nginx-authreq-cache-1k", "nginx auth_request to sessiongate's decision API vs nginx auth_request + proxy_cache"),
        ("nginx-authreq-sg-1k", "sg-session-1k", "nginx auth_request to sessiongate's decision API vs sessiongate proxying itself (warm cache)"),
        ("sg-nocache-1k", "envoy-extauthz-1k", "sessiongate without cache vs Envoy ext_authz"),
        ("sg-nocache-1k", "traefik-forwardauth-1k", "sessiongate without cache vs Traefik forwardAuth"),
        ("sg-nocache-1k", "caddy-forwardauth-1k", "sessiongate without cache vs Caddy forward_auth"),
        ("sg-nocache-1k", "oathkeeper-bearer-1k", "sessiongate without cache vs Ory Oathkeeper bearer_token"),
        ("sg-anon", "oathkeeper-plain", "sessiongate anonymous vs Ory Oathkeeper plain (noop rule)"),
        ("sg-session-1k", "envoy-extauthz-1k", "sessiongate session (warm cache) vs Envoy ext_authz (no cache)"),
        ("sg-session-1k", "traefik-forwardauth-1k", "sessiongate session (warm cache) vs Traefik forwardAuth (no cache)"),
        ("sg-session-1k", "caddy-forwardauth-1k", "sessiongate session (warm cache) vs Caddy forward_auth (no cache)"),
        ("sg-session-1k", "oathkeeper-bearer-1k", "sessiongate session (warm cache) vs Ory Oathkeeper bearer_token (no cache)"),
        ("opt-bare-nows", "opt-bare-default", "bare pingora: work stealing off vs on"),
        ("opt-bare-2threads", "opt-bare-default", "bare pingora: 2 threads vs 1 (one CPU)"),
        ("opt-bare-pool0", "opt-bare-default", "bare pingora: upstream_keepalive_pool_size 0 vs 128"),
        ("opt-bare-readbuf0", "opt-bare-default", "bare pingora: no L4 read buffer vs 64 KiB"),
        ("opt-bare-close", "opt-bare-default", "bare pingora: a connection per request vs keep-alive"),
        ("opt-sg-session-1tok-2threads", "sg-session-1tok", "sessiongate session (1 token): 2 threads vs 1 (one CPU)"),
    ]
    rows = []
    for a, b, what in pairs:
        if a not in c or b not in c:
            continue
        A, B = c[a], c[b]
        r_rps = ratio(A, B, "rps")
        r_p50 = ratio(A["latency_ms"], B["latency_ms"], "p50")
        r_p99 = ratio(A["latency_ms"], B["latency_ms"], "p99")
        r_cpu = ratio(A, B, "cpu_us_per_request")
        flag = "" if A["valid"] and B["valid"] else " (a side is INVALID)"
        rows.append(f"| {what}{flag} | {fmt(r_rps, 2)}× | {fmt(r_p50, 2)}× | {fmt(r_p99, 2)}× | {fmt(r_cpu, 2)}× |")
    if not rows:
        return ""
    head = ("| comparison (A vs B) | req/s A/B | p50 A/B | p99 A/B | CPU per request A/B |\n"
            "|---|---:|---:|---:|---:|\n")
    return head + "\n".join(rows) + "\n"


def main_table(cases):
    head = ("| case | req/s | p50 ms | p90 ms | p99 ms | non-2xx | proxy CPU µs/req | proxy CPU (cores) | "
            "peak RSS MiB | whoami/req | new conns app/auth | status |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
    rows = []
    for r in cases:
        if r["kind"] != "wrk":
            continue
        lat = r["latency_ms"]
        status = "ok" if r["valid"] else "**INVALID**: " + "; ".join(r["problems"])
        if r["notes"]:
            status += " (" + "; ".join(r["notes"]) + ")"
        nc = r["new_connections"]
        rows.append(
            f"| {r['name']} | {fmt(r['rps'], 0)} | {fmt(lat['p50'], 2)} | {fmt(lat['p90'], 2)} | {fmt(lat['p99'], 2)} "
            f"| {fmt(r['non2xx'])} | {fmt(r['cpu_us_per_request'], 1)} | {fmt(r['proxy_cpu_util'], 2)} "
            f"| {fmt(r['peak_rss_mib'], 1)} | {fmt(r['whoami_per_request'], 4)} | {nc['app']}/{nc['auth']} | {status} |")
    return head + "\n".join(rows) + "\n"


def burst_table(cases):
    rows = []
    for r in cases:
        if r["kind"] != "burst":
            continue
        b = r.get("burst", {})
        lat = r["latency_ms"]
        status = "ok" if r["valid"] else "**INVALID**: " + "; ".join(r["problems"])
        rows.append(
            f"| {r['name']} | {fmt(b.get('tokens'))} × {fmt(b.get('fanout'))} (waves of {fmt(b.get('wave_tokens'))} tokens) "
            f"| {fmt(r['requests'])} | {fmt(b.get('ok'))} | {fmt(r['non2xx'])} | {fmt(b.get('errors'))} "
            f"| {fmt(r['whoami_calls'])} | {fmt(lat['p50'], 2)} | {fmt(lat['p99'], 2)} | {fmt(lat['max'], 2)} "
            f"| {fmt(r['seconds'], 2)} | {fmt(r.get('cpu_us_per_request'), 1)} | {fmt(r.get('peak_rss_mib'), 1)} | {status} |")
    if not rows:
        return ""
    head = ("| case | tokens × connections | requests | 2xx | non-2xx | failed | whoami calls | p50 ms | p99 ms | max ms "
            "| wall s | proxy CPU µs/req | peak RSS MiB | status |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
    return head + "\n".join(rows) + "\n"


def chart(cases, path, env):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no chart", file=sys.stderr)
        return False
    rows = [r for r in cases if r["kind"] == "wrk"]
    if not rows:
        return False
    colors = {"none": "#9e9e9e", "sg": "#1f77b4", "sg-nocache": "#6baed6", "nginx": "#2ca02c", "nginx-sg": "#98df8a",
              "envoy": "#d62728", "traefik": "#9467bd", "caddy": "#ff7f0e",
              "oathkeeper": "#8c564b"}
    names = [r["name"] for r in rows][::-1]
    vals = [r["rps"] or 0 for r in rows][::-1]
    cols = [colors.get(r["proxy"], "#444444") for r in rows][::-1]
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(rows) + 1.6))
    bars = ax.barh(names, vals, color=cols)
    for bar, r in zip(bars, rows[::-1]):
        label = f" {bar.get_width():,.0f}"
        if not r["valid"]:
            bar.set_hatch("//")
            bar.set_edgecolor("black")
            label += "  INVALID"
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, label, va="center", fontsize=8)
    ax.set_xlabel("requests per second (higher is better)")
    ax.set_title(f"sessiongate load benchmark — one proxy worker, wrk -t{env.get('wrk_threads')} "
                 f"-c{env.get('connections')} -d{env.get('duration')}", fontsize=10)
    ax.set_xlim(0, max(vals) * 1.22 if max(vals) > 0 else 1)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def env_md(env, versions):
    pin = (f"proxy pinned to CPU {env['proxy_cpu']}, wrk and stand-ins to CPUs {env['load_cpus']}"
           if env.get("pinned") else "no CPU pinning")
    v = versions
    return (
        f"- started {env['started']}, {env['cpus']} × {env['cpu_model']}, {env['mem_kib'] // 1024} MiB, "
        f"Linux {env['kernel']}; {pin}\n"
        f"- load: `wrk -t{env['wrk_threads']} -c{env['connections']} -d{env['duration']} --latency` after a "
        f"{env['warmup']} warm-up with the same script; token cases rotate `X-Session-Token` over N tokens\n"
        f"- versions: sessiongate {v.get('sessiongate')} (git {v.get('sessiongate_git')}), nginx {v.get('nginx')}, "
        f"envoy {v.get('envoy')}, traefik {v.get('traefik')}, caddy {v.get('caddy')}, "
        f"oathkeeper {v.get('oathkeeper', '—')}, wrk {v.get('wrk')}\n")


def write_json(out, name, doc):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name), "w") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")


def render(argv):
    cases_path, out, env_s, vers_s = argv
    cases = load_jsonl(cases_path)
    env, versions = json.loads(env_s), json.loads(vers_s)
    write_json(out, "results.json", {"environment": env, "versions": versions, "cases": cases})
    has_chart = chart(cases, os.path.join(out, "chart.png"), env)
    table = main_table(cases)
    bursts = burst_table(cases)
    ratios = ratios_md(cases)
    invalid = [r["name"] for r in cases if not r["valid"]]
    md = ["# sessiongate load benchmark\n", env_md(env, versions)]
    md.append("\n## Throughput and latency\n\n" + table)
    md.append("\nproxy CPU (cores) = the proxy's utime+stime over the run divided by its duration "
              "(1.00 = one core saturated). whoami/req and new connections are counted by the stand-ins "
              "during the measured run (after the warm-up).\n")
    if bursts:
        md.append("\n## Cold burst\n\n" + bursts)
    if ratios:
        md.append("\n## Ratios (same run)\n\n" + ratios)
    if invalid:
        md.append("\n**INVALID cases** (numbers not comparable): " + ", ".join(invalid) + "\n")
    if has_chart:
        md.append("\n![req/s per case](chart.png)\n")
    text = "".join(md)
    with open(os.path.join(out, "results.md"), "w") as fh:
        fh.write(text)
    print(table)
    if bursts:
        print(bursts)
    if ratios:
        print(ratios)
    if invalid:
        print("INVALID: " + ", ".join(invalid))
    print(f"written: {out}/results.md, results.json" + (", chart.png" if has_chart else ""))


def memory(argv):
    path, out, env_s, vers_s = argv
    rows = load_jsonl(path)
    env, versions = json.loads(env_s), json.loads(vers_s)
    write_json(out, "memory.json", {"environment": env, "versions": versions, "sizes": rows})
    head = ("| cached sessions | RSS before MiB | RSS after MiB | growth MiB | bytes / session | cache entries "
            "(metric) | drive req/s | status |\n|---:|---:|---:|---:|---:|---:|---:|---|\n")
    lines = []
    for r in rows:
        d = r["drive"]
        status = "ok" if r["valid"] else f"**INVALID** (ok={d['ok']}, non2xx={d['non2xx']}, errors={d['errors']})"
        lines.append(
            f"| {r['sessions']:,} | {r['rss_before_kib'] / 1024:,.1f} | {r['rss_after_kib'] / 1024:,.1f} "
            f"| {(r['rss_after_kib'] - r['rss_before_kib']) / 1024:,.1f} | {r['bytes_per_session']:,.0f} "
            f"| {fmt(r['cache_entries'])} | {d['rps']:,.0f} | {status} |")
    table = head + "\n".join(lines) + "\n"
    md = ("# sessiongate memory per cached session\n\n" + env_md(env, versions).split("\n- load:")[0] + "\n"
          f"- versions: sessiongate {versions.get('sessiongate')} (git {versions.get('sessiongate_git')})\n"
          "- method: fresh sessiongate (`threads = 1`, `cache.max_ttl = \"1h\"`), 2,000 warm-up sessions, "
          "VmRSS before, N distinct `X-Session-Token`s through a session route (64 keep-alive connections), "
          "3 s pause, VmRSS after; bytes/session = growth / N\n\n" + table)
    with open(os.path.join(out, "memory.md"), "w") as fh:
        fh.write(md)
    print(table)
    print(f"written: {out}/memory.md, memory.json")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, rest = sys.argv[1], sys.argv[2:]
    {"record": record, "oneline": oneline, "render": render, "memory": memory}.get(
        cmd, lambda _a: sys.exit(__doc__))(rest)

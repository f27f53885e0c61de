#!/usr/bin/env python3
"""Instruction counts per request from callgrind runs (`benches/load/run.sh instructions`).

  instructions.py measure CALLGRIND_OUT VARIANT REQUESTS DRIVE_JSON STATS_JSON   -> one JSON line
  instructions.py render JSONL OUT_DIR ENV_JSON VERSIONS_JSON                     -> instructions.md/.json

Each run is one proxy process under `valgrind --tool=callgrind` that served a warm-up and then
REQUESTS requests. Two counts are read from its profile:

- `task_ir`: instructions inside pingora's per-connection task, the inclusive cost of
  `pingora_core::services::listening::Service<A>::run_endpoint::{{closure}}::{{closure}}` (the future
  pingora spawns for each accepted connection: reading, parsing, every proxy hook, the upstream
  exchange, writing the answer). The same function in bare pingora and in sessiongate.
- `total_ir`: every instruction of the process, all threads (start-up, the runtime's scheduler and
  I/O driver, timers, background tasks, shutdown).

Per-request costs are slopes between request counts (least squares over the runs of a variant):
what stays the same in every run (start-up, the warm-up, opening the client's connections,
shutdown) cancels out. So are the counts of calls that create runtime objects (tasks spawned,
timers armed, channels made, allocations), read from the profile's call counts.

Call counts are those of functions that are not inlined in either binary (tokio's task list, the
timer wheel, mimalloc's C entry points, libc's memcpy); a generic function that LTO inlines in one
binary and not in the other (tokio's channel constructors were) cannot be counted this way.

Valgrind's virtual CPU has no SHA extensions: `sha2` falls back to its portable SHA-256
(`sha2::sha256::soft::compress`), which the real CPU does not run when it has SHA-NI. Its inclusive
cost is reported on its own (`soft_sha256_ir`) so that it can be told apart.
"""

import json
import re
import subprocess
import sys

TASK_FN = "pingora_core::services::listening::Service<A>::run_endpoint::{{closure}}::{{closure}}"
SOFT_SHA256 = "sha2::sha256::soft::compress"
# runtime objects one request may create, by the function that creates them
CALLS = {
    "tasks spawned": ("tokio::runtime::task::list::OwnedTasks<S>::bind_inner",),
    "task wake-ups": ("tokio::runtime::task::raw::schedule",),
    "pingora timers": ("pingora_timeout::timer::TimerManager::register_timer",),
    "tokio timers": ("tokio::runtime::time::wheel::Wheel::insert",),
    "allocations": ("mi_malloc", "mi_malloc_aligned", "mi_zalloc", "mi_zalloc_aligned", "mi_realloc",
                    "mi_realloc_aligned"),
    "memcpy calls": ("__memcpy_avx_unaligned_erms",),
}


def call_counts(path):
    """{callee name: calls} over the whole profile (callgrind's `cfn=` / `calls=` lines)."""
    names, calls, callee = {}, {}, None
    ref = re.compile(r"^c?fn=\((\d+)\)(?: (.*))?$")
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith(("fn=", "cfn=")):
                m = ref.match(line.rstrip("\n"))
                if not m:
                    continue
                fid, name = m.group(1), m.group(2)
                if name is not None:
                    names[fid] = name
                callee = names.get(fid) if line.startswith("cfn=") else None
            elif line.startswith("calls=") and callee is not None:
                calls[callee] = calls.get(callee, 0) + int(line.split()[0][6:])
                callee = None
    return {
        label: sum(n for fn, n in calls.items() if fn in fns or fn.split(" ")[0] in fns)
        for label, fns in CALLS.items()
    }
# a line of `callgrind_annotate --inclusive=yes`: "147,292,558 (75.69%)  ???:function [object]"
LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+\S*?:(.*?)\s+\[[^\]]*\]\s*$")


def annotate(path):
    """{function: inclusive Ir} of a callgrind profile (every function, no threshold)."""
    out = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
        check=True, capture_output=True, text=True,
    ).stdout
    costs = {}
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            fn = m.group(2)
            costs[fn] = max(costs.get(fn, 0), int(m.group(1).replace(",", "")))
    return costs


def totals(path):
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise SystemExit(f"{path}: no totals line (did the process exit cleanly?)")


def measure(argv):
    path, variant, requests, drive, stats = argv
    costs = annotate(path)
    task = costs.get(TASK_FN)
    if task is None:
        raise SystemExit(f"{path}: no {TASK_FN} in the profile")
    # where sessiongate's own code spends it (inclusive, whole run): its hooks and modules
    ours = {fn: ir for fn, ir in costs.items() if fn.startswith(("sessiongate::", "<sessiongate::"))}
    print(json.dumps({
        "variant": variant, "requests": int(requests), "task_ir": task, "total_ir": totals(path),
        "soft_sha256_ir": costs.get(SOFT_SHA256, 0), "calls": call_counts(path),
        "drive": json.loads(drive), "stats": json.loads(stats),
        "sessiongate_fns": ours,
    }))


def slope(points):
    """Least-squares slope of [(x, y)]; None with fewer than two distinct x."""
    n = len(points)
    if n < 2 or len({x for x, _ in points}) < 2:
        return None
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    num = sum((x - mx) * (y - my) for x, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return num / den


def top_functions(rs, n=14):
    """sessiongate's functions with the largest per-request slope of inclusive Ir (start-up work,
    the same in every run, has none)."""
    fns = set.intersection(*(set(r["sessiongate_fns"]) for r in rs)) if len(rs) > 1 else set()
    per = []
    for fn in fns:
        k = slope([(r["requests"], r["sessiongate_fns"][fn]) for r in rs])
        if k is not None and k >= 50:
            per.append({"fn": fn, "ir_per_request": round(k)})
    return sorted(per, key=lambda x: -x["ir_per_request"])[:n]


def valid(run):
    d, st, n = run["drive"], run["stats"], run["requests"]
    problems = []
    if d.get("ok") != n or d.get("non2xx") or d.get("errors"):
        problems.append(f"client: {d.get('ok')} ok of {n}, {d.get('non2xx')} non-2xx, {d.get('errors')} errors")
    if st.get("upstream_requests") != n:
        problems.append(f"upstream saw {st.get('upstream_requests')} requests, not {n}")
    if run["variant"].startswith("sg-session"):
        if st.get("upstream_with_identity") != n:
            problems.append(f"{st.get('upstream_with_identity')} of {n} upstream requests carried X-User-Id")
        if st.get("whoami_calls"):
            problems.append(f"{st.get('whoami_calls')} whoami calls with a warm cache")
    return problems


def render(argv):
    jsonl, out, env, versions = argv
    runs = [json.loads(l) for l in open(jsonl, encoding="utf-8") if l.strip()]
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    rows = {}
    for v in variants:
        rs = sorted((r for r in runs if r["variant"] == v), key=lambda r: r["requests"])
        problems = [f"{r['requests']}: {p}" for r in rs for p in valid(r)]
        rows[v] = {
            "runs": [{k: r[k] for k in ("requests", "task_ir", "total_ir", "soft_sha256_ir")} for r in rs],
            "task_per_request": slope([(r["requests"], r["task_ir"]) for r in rs]),
            "total_per_request": slope([(r["requests"], r["total_ir"]) for r in rs]),
            "soft_sha256_per_request": slope([(r["requests"], r["soft_sha256_ir"]) for r in rs]),
            "calls_per_request": {
                label: slope([(r["requests"], r["calls"][label]) for r in rs]) for label in CALLS
            },
            "problems": problems,
            "top_sessiongate": top_functions(rs),
        }
    base = rows.get("bare-pingora")
    lines = ["# Instructions per request (callgrind)", ""]
    lines.append("Per-request slopes over the request counts of each variant (least squares), so that "
                 "start-up, warm-up, connection set-up and shutdown cancel out. `task` counts only "
                 "pingora's per-connection task; `process` counts every thread. Ratios are to "
                 "`bare-pingora` from the same run.")
    lines.append("")
    lines.append("| variant | requests | task Ir/req | × bare | process Ir/req | × bare | of which soft SHA-256 | status |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---|")

    def ratio(v, key):
        if not base or not base[key] or rows[v][key] is None:
            return "–"
        return f"{rows[v][key] / base[key]:.3f}"

    for v in variants:
        r = rows[v]
        fmt = lambda x: "–" if x is None else f"{x:,.0f}"
        status = "ok" if not r["problems"] else "INVALID: " + "; ".join(r["problems"])
        counts = ", ".join(str(x["requests"]) for x in r["runs"])
        lines.append(f"| `{v}` | {counts} | {fmt(r['task_per_request'])} | {ratio(v, 'task_per_request')} | "
                     f"{fmt(r['total_per_request'])} | {ratio(v, 'total_per_request')} | "
                     f"{fmt(r['soft_sha256_per_request'])} | {status} |")
    lines.append("")
    lines.append("Runtime objects created per request (slopes of call counts, all threads):")
    lines.append("")
    lines.append("| variant | " + " | ".join(CALLS) + " |")
    lines.append("|---|" + "---:|" * len(CALLS))
    for v in variants:
        c = rows[v]["calls_per_request"]
        lines.append(f"| `{v}` | " + " | ".join("–" if c[k] is None else f"{c[k] + 0.0:.2f}".replace("-0.00", "0.00") for k in CALLS) + " |")
    lines.append("")
    lines.append("Raw counts (instructions of the whole run):")
    lines.append("")
    lines.append("| variant | requests | task Ir | process Ir |")
    lines.append("|---|---:|---:|---:|")
    for v in variants:
        for x in rows[v]["runs"]:
            lines.append(f"| `{v}` | {x['requests']} | {x['task_ir']:,} | {x['total_ir']:,} |")
    for v in variants:
        top = rows[v]["top_sessiongate"]
        if not top:
            continue
        lines.append("")
        lines.append(f"sessiongate's functions in `{v}`, inclusive Ir per request (slopes; a function's "
                     "cost includes the functions it calls, so rows overlap):")
        lines.append("")
        lines.append("| function | Ir/req |")
        lines.append("|---|---:|")
        for t in top:
            lines.append(f"| `{t['fn'][:120]}` | {t['ir_per_request']:,} |")
    lines.append("")
    lines.append(f"Environment: `{env}`")
    lines.append("")
    lines.append(f"Versions: `{versions}`")
    text = "\n".join(lines) + "\n"
    with open(f"{out}/instructions.md", "w", encoding="utf-8") as fh:
        fh.write(text)
    with open(f"{out}/instructions.json", "w", encoding="utf-8") as fh:
        json.dump({"env": json.loads(env), "versions": json.loads(versions), "variants": rows}, fh, indent=1)
    sys.stdout.write(text)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("measure", "render"):
        raise SystemExit(__doc__)
    {"measure": measure, "render": render}[sys.argv[1]](sys.argv[2:])

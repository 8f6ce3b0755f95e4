#!/usr/bin/env python3
"""HTTP benchmarks of the release `api` binary with wrk, against loopback only.

    python3 deploy/bench/bench.py [--quick] [SECTION...]   (normally `just bench [--quick] [SECTION...]`)

Sections (default: all, in this order): auth jobs tasks cache shop. Every measurement is one row of
SCENARIOS below; the runner interprets that table, and a section's setup and summary lines are the
small functions named in SECTIONS.
  auth  /health/live, /v1/users/me (with the session cache and without it, and with the request-wide
        rate limits on: USER/ANON budgets of 10^9 a minute, so the limiter's cost and no 429s),
        login throughput vs the bcrypt ceiling, health under logins
  jobs  audit jobs/s of one and of two `worker` processes (JOBS_N synthetic jobs each; jobs/s =
        jobs / (last row's recorded_at - worker start), "first row after" is the start-up share),
        then no-op jobs/s of one worker (JOBS_N jobs on the bench-only queue {prefix}:jobs:noop,
        `worker bench-enqueue --noop`, consumed by a worker started with WORKER_BENCH_NOOP=true
        whose handler only acknowledges: the queue's own cost; jobs/s = jobs / (the moment no task
        is left scheduled, active or in flight in Redis - worker start), polled every 20 ms),
        then signup p50/p99 without and with a worker running, on an API at SIGNUP_BCRYPT_COST.
        The synthetic rows have request_id 'bench'. With JOBS_N > ~8,000 a worker's first fetch may
        fail (apalis-redis 1.0 promotes all due jobs at once) and restart after 1 s: the run warns.
  tasks GET /v1/tasks at one million rows as seed7@seed.example.com (~1,000 tasks of its own) at
        TASKS_CONNS: /health/live at that concurrency, the first page of every sort, a deep page
        (the URL after following next_cursor 25 times), the filters q, category_id,
        priority+status and due_before (pages are cached per user: after the first read these
        are hits), the default first page with CACHE_ENABLED=false (every page from Postgres), a
        read mix where every CACHE_WRITE_EVERY-th request flips one task's status (voiding the
        user's pages; X-Cache counted), then POST /v1/tasks and PATCH of one task. Its database
        `taskshop_bench_tasks` is kept between runs and seeded (`api seed --users 1000 --tasks
        1000000`, ~45 s) only while it holds fewer than 1,000,000 tasks; the tasks the create run
        adds are deleted again. Summary: max p99 of the list scenarios, list req/s vs /health/live,
        and pgbench -M prepared (c=16) on the default first page's statement with and without its
        categories column: what Postgres alone does with it (skipped with a warning without pgbench).
  cache GET /v1/users (admin) from the cache (X-Cache: hit), the same with CACHE_ENABLED=false,
        then a read-mostly mix: every CACHE_WRITE_EVERY-th request renames one user, and the wrk
        script counts X-Cache hit/miss of the GETs. The bench's Redis cache keys are deleted first.
  shop  single-line checkouts (POST /v1/orders, a fresh Idempotency-Key each) on one hot product
        and spread over SHOP_PRODUCTS products at SHOP_CONNS; signed payment.succeeded webhooks
        for distinct pending orders (bodies signed in Python just before the run, cycled by wrk:
        each applies one transition); the catalogue first page cached (also with the rate limits
        on, as in auth) and with CACHE_ENABLED=false; then catalogue reads and checkouts at once, counting X-Cache of the
        reads (the hit rate under a checkout load). Products are inserted in SQL with a stock no
        run can exhaust.

Expects target/release/{api,worker}, PostgreSQL at 127.0.0.1:5432 (trust auth) and Redis at
127.0.0.1:6379 (`just bench` sees to all three). Every run drops and recreates `taskshop_bench`,
serves the API on 127.0.0.1:18080 (restarted whenever a scenario needs other settings) and stops
it and its workers on exit, Ctrl-C included. Redis keys are under the prefix `bench`; the jobs
section deletes `bench:jobs:*` and the unfinished outbox rows before each measurement, and refuses
to run if some other process consumes that queue. Results are printed as Markdown and appended
to var/bench/results-<time>.md; logs of the last run: var/bench/last-api.log, last-worker.log.

Knobs (environment; defaults in KNOBS): DURATION=10s length of every wrk run; CONNS=64, THREADS=2;
LOGIN_CONNS=64, LOGIN_DURATION=10s (login throughput; latency there is the hasher's queue);
PROBE_CONNS=4 (health probe during logins); WRK_TIMEOUT=30s; WARMUP=2s unmeasured run before each
measured one (0 = none); BCRYPT_COST=12; BENCH_DB_POOL=16 (DATABASE_POOL_SIZE of the API);
BENCH_RATE_LIMIT=false (RATE_LIMIT_ENABLED: all load comes from one IP and one account);
JOBS_N=20000, JOBS_TIMEOUT=120 (s per drain), WORKER_CONCURRENCY=32; SIGNUP_CONNS=16,
SIGNUP_DURATION=$DURATION, SIGNUP_BCRYPT_COST=4; TASKS_CONNS=32, TASKS_DURATION=5s, TASKS_WARMUP=0
(warm-up of every tasks run after the first, which gets WARMUP); CACHE_USERS=50,
CACHE_WRITE_EVERY=20 (1 request in N of the mix is a PATCH).
--quick (or BENCH_QUICK=1): every wrk run and warm-up lasts 1 s and JOBS_N defaults to 2000, to
check the runner itself; the figures mean little.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
API_BIN, WORKER_BIN = ROOT / "target/release/api", ROOT / "target/release/worker"
OUT_DIR = ROOT / "var/bench"
API_LOG, WORKER_LOG = OUT_DIR / "last-api.log", OUT_DIR / "last-worker.log"
PG = ["-h", "127.0.0.1", "-p", "5432", "-U", "postgres", "-w"]
BENCH_DB, TASKS_DB = "taskshop_bench", "taskshop_bench_tasks"
BASE_URL, REDIS_URL, REDIS_PREFIX = "http://127.0.0.1:18080", "redis://127.0.0.1:6379", "bench"
HEALTH, ME = "GET /health/live", "GET /v1/users/me (auth)"
TASKS_SEED_USERS, TASKS_SEED_ROWS = 1000, 1_000_000
CLK_TCK = os.sysconf("SC_CLK_TCK")
NPROC = len(os.sched_getaffinity(0))

KNOBS = {
    "DURATION": "10s", "CONNS": "64", "THREADS": "2", "LOGIN_CONNS": "64", "LOGIN_DURATION": "10s",
    "PROBE_CONNS": "4", "WRK_TIMEOUT": "30s", "WARMUP": "2s", "BCRYPT_COST": "12",
    "BENCH_DB_POOL": "16", "BENCH_RATE_LIMIT": "false", "JOBS_N": "20000", "JOBS_TIMEOUT": "120",
    "WORKER_CONCURRENCY": "32", "SIGNUP_CONNS": "16", "SIGNUP_DURATION": "", "SIGNUP_BCRYPT_COST": "4",
    "TASKS_CONNS": "32", "TASKS_DURATION": "5s", "TASKS_WARMUP": "0", "CACHE_USERS": "50",
    "CACHE_WRITE_EVERY": "20", "SHOP_CONNS": "32", "SHOP_PRODUCTS": "1000",
}
QUICK_FORCED = {"DURATION": "1s", "LOGIN_DURATION": "1s", "SIGNUP_DURATION": "1s",
                "TASKS_DURATION": "1s", "WARMUP": "1s"}
QUICK_DEFAULTS = {"JOBS_N": "2000"}
FIXED = {  # placeholders that are not knobs
    "BENCH_EMAIL": "bench@example.com", "BENCH_PASSWORD": "bench-password-1",
    "ADMIN_EMAIL": "bench-admin@example.com", "ADMIN_PASSWORD": "bench-password-1",
    "TASKS_EMAIL": "seed7@seed.example.com", "SEED_PASSWORD": "demo-password-123",
    "TASKS_URL": f"postgres://postgres@127.0.0.1:5432/{TASKS_DB}",
    "WEBHOOK_SECRET": "bench-payment-webhook-secret",
}

# ------------------------------------------------------------- the table ---

@dataclass
class Run:
    """One measurement. Strings may hold {PLACEHOLDERS}: knobs, FIXED, or values a section's setup
    put into V (tokens, ids, cursors). conns/duration/warmup/threads name a knob or are literal."""
    section: str
    name: str                          # table row (unique)
    path: str = "/health/live"
    method: str = "GET"
    auth: str | None = None            # token kind: "bench" (signed up), "admin", "seed" (TASKS_EMAIL)
    conns: str = "CONNS"
    duration: str = "DURATION"
    warmup: str = "WARMUP"             # "0": no warm-up
    threads: str = "THREADS"
    body: str | None = None            # JSON body; a generated wrk script sends it with `method`
    script: str | None = None          # a wrk Lua script of LUA instead
    api: dict = field(default_factory=dict)  # env overrides of the API under test for this run
    kind: str = "wrk"                  # "wrk", "baseline" (measured once per run), "drain" (audit
                                       # jobs/s), "noop" (no-op jobs/s: the queue's own overhead)
    workers: int = 0                   # worker processes consuming during the run (drain: how many)
    parallel: str | None = None        # consecutive runs with one tag run at once, without warm-up
    ramp_ok: bool = False              # fewer responses than connections are expected
    cpu: bool = False                  # record the cores the API used over the run
    before: str | None = None          # HOOKS run before / after the measurement
    after: str | None = None
    tag: str | None = None             # for the section summary ("list")

LOGIN_BODY = '{"email":"{BENCH_EMAIL}","password":"{BENCH_PASSWORD}"}'
AT_SIGNUP_COST = {"BCRYPT_COST": "{SIGNUP_BCRYPT_COST}"}
TASK = dict(section="tasks", auth="seed", conns="TASKS_CONNS", duration="TASKS_DURATION",
            warmup="TASKS_WARMUP")
LIST = dict(TASK, before="page_nonempty", tag="list")
# The request-wide USER and ANON limits on, with budgets no run exhausts: what the limiter costs.
LIMITS_ON = {"RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_USER": "1000000000/60",
             "RATE_LIMIT_ANON": "1000000000/60"}
ME_LIMITED = "GET /v1/users/me (auth, RATE_LIMIT_ENABLED=true)"
PRODUCTS_LIMITED = "GET /v1/products (anonymous, cached, RATE_LIMIT_ENABLED=true)"

SCENARIOS = [
    Run("auth", HEALTH, kind="baseline"),
    Run("auth", ME, "/v1/users/me", auth="bench"),
    Run("auth", "GET /v1/users/me (auth, AUTH_CACHE_ENABLED=false)", "/v1/users/me", auth="bench",
        api={"AUTH_CACHE_ENABLED": "false"}),
    Run("auth", ME_LIMITED, "/v1/users/me", auth="bench", api=LIMITS_ON),
    # bcrypt-bound from the first request (one hash per core, the rest queue): no warm-up.
    Run("auth", "POST /v1/auth/login (c={LOGIN_CONNS})", "/v1/auth/login", "POST", body=LOGIN_BODY,
        conns="LOGIN_CONNS", duration="LOGIN_DURATION", warmup="0", ramp_ok=True, cpu=True),
    Run("auth", "GET /health/live (c={PROBE_CONNS}) during logins", conns="PROBE_CONNS",
        threads="1", parallel="probe"),
    Run("auth", "POST /v1/auth/login (c={LOGIN_CONNS}) during probe", "/v1/auth/login", "POST",
        body=LOGIN_BODY, conns="LOGIN_CONNS", parallel="probe", ramp_ok=True),

    Run("jobs", "audit drain, 1 worker(s)", kind="drain", workers=1),
    Run("jobs", "audit drain, 2 worker(s)", kind="drain", workers=2),
    Run("jobs", "no-op drain, 1 worker", kind="noop", workers=1),
    Run("jobs", "POST /v1/auth/signup (c={SIGNUP_CONNS}, cost {SIGNUP_BCRYPT_COST}, no worker)",
        "/v1/auth/signup", script="signup", conns="SIGNUP_CONNS", duration="SIGNUP_DURATION",
        api=AT_SIGNUP_COST),
    Run("jobs", "POST /v1/auth/signup (c={SIGNUP_CONNS}, cost {SIGNUP_BCRYPT_COST}, 1 worker)",
        "/v1/auth/signup", script="signup", conns="SIGNUP_CONNS", duration="SIGNUP_DURATION",
        api=AT_SIGNUP_COST, workers=1, after="signup_backlog"),

    # The baseline at TASKS_CONNS (the shared one when TASKS_CONNS = CONNS); the first list run
    # warms up for WARMUP (the DB pool opens), the others for TASKS_WARMUP.
    Run("tasks", "GET /health/live (c={TASKS_CONNS})", kind="baseline", conns="TASKS_CONNS",
        duration="TASKS_DURATION", warmup="0"),
    Run(**dict(LIST, warmup="WARMUP"), name="GET /v1/tasks (first page, -created_at = default)",
        path="/v1/tasks"),
    *[Run(**LIST, name=f"GET /v1/tasks?sort={s} (first page)", path=f"/v1/tasks?sort={s}")
      for s in ("created_at", "due_at", "-due_at", "priority", "-priority")],
    Run(**LIST, name="GET /v1/tasks?status=todo,in_progress&sort=due_at, page 26 (cursor)",
        path="/v1/tasks?status=todo,in_progress&sort=due_at&limit=20&cursor={deep_cursor}"),
    Run(**LIST, name="GET /v1/tasks?q=report", path="/v1/tasks?q=report"),
    Run(**LIST, name="GET /v1/tasks?category_id=<own>", path="/v1/tasks?category_id={cat_id}"),
    Run(**LIST, name="GET /v1/tasks?priority=high&status=todo",
        path="/v1/tasks?priority=high&status=todo"),
    Run(**LIST, name="GET /v1/tasks?due_before=<now+7d>", path="/v1/tasks?due_before={due}"),
    Run(**dict(TASK, before="page_nonempty"), name="GET /v1/tasks (first page, CACHE_ENABLED=false)",
        path="/v1/tasks", api={"CACHE_ENABLED": "false"}, tag="uncached"),
    Run(**TASK, name="GET /v1/tasks + {WRITE_PCT}% PATCH /v1/tasks/{id} (cached)", path="/v1/tasks",
        script="tasks_mix", tag="mix"),
    Run(**TASK, name="POST /v1/tasks", path="/v1/tasks", method="POST",
        body='{"title":"bench task","priority":"high"}'),
    Run(**TASK, name="PATCH /v1/tasks/{id} (one task, todo<->done)", path="/v1/tasks/{task_id}",
        script="task_update"),

    Run("cache", HEALTH, kind="baseline"),
    Run("cache", "GET /v1/users (admin, cached: hit)", "/v1/users", auth="admin", after="expect_hit"),
    Run("cache", "GET /v1/users (admin, cached: hit, AUTH_CACHE_ENABLED=false)", "/v1/users",
        auth="admin", api={"AUTH_CACHE_ENABLED": "false"}, after="expect_hit"),
    Run("cache", "GET /v1/users (admin, CACHE_ENABLED=false)", "/v1/users", auth="admin",
        api={"CACHE_ENABLED": "false"}, before="expect_miss"),
    Run("cache", "GET /v1/users + {WRITE_PCT}% PATCH /v1/users/{id} (cached)", "/v1/users",
        auth="admin", script="cache_mix"),

    Run("shop", HEALTH, kind="baseline"),
    Run("shop", "POST /v1/orders (hot product, c={SHOP_CONNS})", "/v1/orders", auth="bench",
        script="checkout_hot", conns="SHOP_CONNS"),
    Run("shop", "POST /v1/orders (spread over {SHOP_PRODUCTS} products, c={SHOP_CONNS})", "/v1/orders",
        auth="bench", script="checkout_spread", conns="SHOP_CONNS"),
    Run("shop", "POST /v1/webhooks/payments (c={SHOP_CONNS})", "/v1/webhooks/payments",
        script="webhooks", conns="SHOP_CONNS", warmup="0", before="sign_webhooks"),
    Run("shop", "GET /v1/products (anonymous, cached)", "/v1/products"),
    Run("shop", PRODUCTS_LIMITED, "/v1/products", api=LIMITS_ON),
    Run("shop", "GET /v1/products (anonymous, CACHE_ENABLED=false)", "/v1/products",
        api={"CACHE_ENABLED": "false"}),
    Run("shop", "GET /v1/products/{hot_id} during checkouts (c=16)", "/v1/products/{hot_id}",
        script="count_cache", conns="16", parallel="shopmix"),
    Run("shop", "POST /v1/orders (hot) during catalogue reads (c=16)", "/v1/orders", auth="bench",
        script="checkout_hot", conns="16", parallel="shopmix"),
]

# A fresh Idempotency-Key per request: a random tag per wrk thread plus a counter.
CHECKOUT_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local tag, n = nil, 0
local products = { {PRODUCT_LIST} }
function init(args)
    local f = io.open("/proc/sys/kernel/random/uuid", "r")
    tag = f:read("*l"):gsub("-", ""):sub(1, 16)
    f:close()
    math.randomseed(tonumber(tag:sub(1, 8), 16))
end
function request()
    n = n + 1
    local id = products[math.random(1, #products)]
    local headers = {}
    for k, v in pairs(wrk.headers) do headers[k] = v end  -- Authorization from -H
    headers["Content-Type"] = "application/json"
    headers["Idempotency-Key"] = tag .. "-" .. n
    return wrk.format(nil, nil, headers, '{"items":[{"product_id":"' .. id .. '","quantity":1}]}')
end
"""

# Counts X-Cache over every wrk thread (threads have their own Lua states) and prints the mix.
COUNT_CACHE_LUA = """hits, misses, other = 0, 0, 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body)
    local c = headers["x-cache"] or headers["X-Cache"]
    if c == "hit" then hits = hits + 1 elseif c == "miss" then misses = misses + 1 else other = other + 1 end
end
function done(summary, latency, requests)
    local h, m, o = 0, 0, 0
    for _, t in ipairs(threads) do h = h + t:get("hits"); m = m + t:get("misses"); o = o + t:get("other") end
    io.write(string.format("cache-mix: hits=%d misses=%d other=%d\\n", h, m, o))
end
"""

# A read-mostly mix: every CACHE_WRITE_EVERY-th request PATCHes WRITE_PATH (BODY_A and BODY_B in
# turn), the others GET READ_PATH; counts X-Cache over all threads.
READ_WRITE_MIX_LUA = COUNT_CACHE_LUA + """local every, path = {CACHE_WRITE_EVERY}, "WRITE_PATH"
local n, get_headers, patch_headers = 0, {}, {}
function init(args)
    for k, v in pairs(wrk.headers) do get_headers[k] = v; patch_headers[k] = v end
    patch_headers["Content-Type"] = "application/json"
end
function request()
    n = n + 1
    if n % every == 0 then
        local body = ((n / every) % 2 == 0) and 'BODY_A' or 'BODY_B'
        return wrk.format("PATCH", path, patch_headers, body)
    end
    return wrk.format("GET", "READ_PATH", get_headers, nil)
end
"""

LUA = {
    "checkout_hot": CHECKOUT_LUA.replace("{PRODUCT_LIST}", '"{hot_id}"'),
    "checkout_spread": CHECKOUT_LUA.replace("{PRODUCT_LIST}", "{spread_ids}"),
    # Pre-signed bodies (one file line = signature TAB body), cycled over all threads.
    "webhooks": """wrk.method = "POST"
local lines = {}
for line in io.lines("{webhook_file}") do table.insert(lines, line) end
local n = 0
function init(args) n = math.random(1, #lines) end
function request()
    n = n % #lines + 1
    local sig, body = lines[n]:match("^([^\t]*)\t(.*)$")
    return wrk.format(nil, nil, { ["Content-Type"] = "application/json", ["Payment-Signature"] = sig }, body)
end
""",
    "count_cache": COUNT_CACHE_LUA,
    # An e-mail unique per request: a random tag per wrk thread (own Lua state) plus a counter.
    "signup": """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local tag, n = nil, 0
function init(args)
    local f = io.open("/proc/sys/kernel/random/uuid", "r")
    if f then
        tag = f:read("*l"):gsub("-", ""):sub(1, 16)
        f:close()
    else
        math.randomseed(os.time() + math.floor(os.clock() * 1e6))
        tag = string.format("%x%08x", os.time(), math.random(0, 0x7fffffff))
    end
end
function request()
    n = n + 1
    return wrk.format(nil, nil, nil, string.format(
        '{"email":"s%s-%d@bench.example.com","password":"{BENCH_PASSWORD}","name":"Bench"}', tag, n))
end
""",
    "task_update": """wrk.method = "PATCH"
wrk.headers["Content-Type"] = "application/json"
local n = 0
local bodies = { '{"status":"done"}', '{"status":"todo"}' }
function request()
    n = n + 1
    return wrk.format(nil, nil, nil, bodies[n % 2 + 1])
end
""",
    # Every CACHE_WRITE_EVERY-th request flips the status of one of the user's tasks (voiding the
    # user's cached pages); the others read the first page.
    "tasks_mix": READ_WRITE_MIX_LUA.replace("READ_PATH", "/v1/tasks").replace("WRITE_PATH", "/v1/tasks/{task_id}")
        .replace("BODY_A", '{"status":"done"}').replace("BODY_B", '{"status":"todo"}'),
    # Every CACHE_WRITE_EVERY-th request renames one user; the others read the admin list.
    "cache_mix": READ_WRITE_MIX_LUA.replace("READ_PATH", "/v1/users").replace("WRITE_PATH", "/v1/users/{cache_target}")
        .replace("BODY_A", '{"name":"Bench Rename A"}').replace("BODY_B", '{"name":"Bench Rename B"}'),
}

# ----------------------------------------------------------------- state ---

K: dict[str, str] = {}        # knobs
V: dict[str, str] = {}        # values set by section setups ({placeholders})
R: dict[str, dict] = {}       # results by run name
ORDER: list[str] = []         # table rows, in order
NOTES: list[str] = []
WARNINGS: list[str] = []
API: dict = {"proc": None, "config": None, "starts": 0, "peak_rss": 0.0}  # the api serve under test
WLOG: dict = {"started": False, "mark": 0}   # worker log: truncated at the first start; lines before
WORKERS: list[subprocess.Popen] = []
BACKGROUND: list[subprocess.Popen] = []
WORK = Path(tempfile.gettempdir()) / f"bench.{os.getpid()}"  # scripts, mail; removed on exit

class Die(Exception):
    pass

def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)

def die(msg: str):
    raise Die(msg)

def add_warning(msg: str) -> None:
    WARNINGS.append(msg)
    log(f"WARNING: {msg}")

def note(label: str, value: str) -> None:
    NOTES.append(f"{label}: {value}")

def fill(s: str) -> str:
    """Replaces {NAME} by a knob, a FIXED value or a V value; other braces stay."""
    values = {**FIXED, **K, **V}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), s)

def knob(v: str) -> str:
    return K[v] if v in K else fill(v)

def num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0

def pct(a, b) -> str:
    return f"{100 * num(a) / num(b):.1f}%" if num(b) > 0 else "n/a"

def dur_s(d: str) -> float:
    m = re.match(r"([0-9.]+)(\w*)", d)
    return float(m.group(1)) * {"m": 60, "h": 3600}.get(m.group(2), 1)

def load_knobs(quick: bool) -> None:
    for k, default in KNOBS.items():
        K[k] = os.environ.get(k) or (QUICK_DEFAULTS.get(k, default) if quick else default)
    if quick:
        K.update(QUICK_FORCED)
    K["SIGNUP_DURATION"] = K["SIGNUP_DURATION"] or K["DURATION"]
    K["WRITE_PCT"] = f"{100 / int(K['CACHE_WRITE_EVERY']):g}"

def base_env() -> dict[str, str]:
    """The environment of every api/worker command (.env values must not leak into these)."""
    return {**os.environ, "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}",
            "REDIS_URL": REDIS_URL, "REDIS_PREFIX": REDIS_PREFIX, "APP_ENV": "development",
            "API_ADDR": "127.0.0.1:18080", "BCRYPT_COST": K["BCRYPT_COST"], "RUST_LOG": "warn",
            "LOG_FORMAT": "json", "DATABASE_POOL_SIZE": K["BENCH_DB_POOL"],
            "RATE_LIMIT_ENABLED": K["BENCH_RATE_LIMIT"]}

def cmd(args: list, env: dict | None = None, what: str = "", tail: int = 0) -> str:
    """Runs a command to completion; dies with its output (or its last `tail` lines) on failure."""
    p = subprocess.run([str(a) for a in args], env=env or base_env(), capture_output=True, text=True)
    if p.returncode != 0:
        out = p.stdout + p.stderr
        sys.stderr.write("\n".join(out.splitlines()[-tail:]) + "\n" if tail else out)
        die(f"{what or args[0]} failed (exit status {p.returncode})")
    return p.stdout

def pg_q(sql: str, db: str = BENCH_DB) -> str:
    return cmd(["psql", *PG, "-X", "-q", "-d", db, "-tA", "-F", " ", "-c", sql], what="psql").strip()

def redis(*args) -> str:
    return cmd(["redis-cli", "-u", REDIS_URL, *args], what="redis-cli").strip()

def redis_del(pattern: str) -> None:
    keys = redis("--scan", "--pattern", pattern).split()
    for i in range(0, len(keys), 1000):
        redis("del", *keys[i:i + 1000])

# ------------------------------------------------------------------ http ---

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy

def http(method: str, path: str, token: str | None = None, body: dict | None = None, timeout=30,
         headers: dict | None = None):
    req = urllib.request.Request(BASE_URL + path, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with OPENER.open(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()

def expect(status_wanted: int, what: str, method: str, path: str, **kw):
    status, headers, data = http(method, path, **kw)
    if status != status_wanted:
        sys.stderr.write(data.decode(errors="replace") + "\n")
        die(f"{what} returned HTTP {status}, expected {status_wanted}")
    return headers, json.loads(data or b"null")

def get_ok(path: str, token: str):
    return expect(200, f"GET {path}", "GET", path, token=token)

def login(email: str, password: str) -> str:
    _, d = expect(200, f"login of {email}", "POST", "/v1/auth/login",
                  body={"email": email, "password": password})
    return d.get("access_token") or die(f"login of {email} returned no access_token")

def api_live() -> bool:
    try:
        return http("GET", "/health/live", timeout=2)[0] == 200
    except OSError:
        return False

# ------------------------------------------------------------- processes ---

def stop_pid(p: subprocess.Popen, seconds: float) -> int:
    """SIGTERM, up to `seconds` to exit, then SIGKILL. Returns the shell-style exit status."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(seconds)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return 128 - p.returncode if p.returncode < 0 else p.returncode

def proc_status(pid: int, key: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return line.split()[1]
    return "?"

def cpu_ticks(pid: int) -> int:
    """CPU time (clock ticks, user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return int(fields[11]) + int(fields[12])

def api_ticks() -> int:
    p = API["proc"]
    if p.poll() is not None:
        api_died("api serve")
    return cpu_ticks(p.pid)

def api_died(what: str):
    sys.stderr.write("".join(API_LOG.read_text().splitlines(True)[-20:]))
    die(f"{what}: api serve (pid {API['proc'].pid}) has exited (log: {API_LOG})")

def start_api(config: dict) -> None:
    """Migrates the database of `config` and starts `api serve` with its env overrides."""
    if api_live():
        die(f"something already answers on {BASE_URL}; stop it first")
    env = {**base_env(), **{k: fill(v) for k, v in config.items()}}
    cmd([API_BIN, "migrate"], env, "api migrate")
    API["starts"] += 1
    with open(API_LOG, "w" if API["starts"] == 1 else "a") as f:
        extra = "".join(f"{k}={fill(v)}, " for k, v in config.items() if k != "BCRYPT_COST")
        f.write(f"=== api serve, BCRYPT_COST={env['BCRYPT_COST']}, {extra}"
                f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}\n")
        f.flush()
        p = API["proc"] = subprocess.Popen([API_BIN, "serve"], env=env, stdout=f, stderr=f)
    API["config"] = config
    deadline = time.monotonic() + 30
    while not api_live():
        if p.poll() is not None:
            api_died("start-up")
        if time.monotonic() > deadline:
            die(f"api did not answer {BASE_URL}/health/live within 30 s (log: {API_LOG})")
        time.sleep(0.2)
    log(f"api serve up (pid {p.pid}, workers: {proc_status(p.pid, 'Threads')} threads, "
        f"BCRYPT_COST={env['BCRYPT_COST']})")

def stop_api() -> None:
    """Stops api serve (SIGTERM, <= 10 s, then SIGKILL), keeping its peak RSS (VmHWM)."""
    p = API["proc"]
    if p is None:
        return
    try:
        API["peak_rss"] = max(API["peak_rss"], int(proc_status(p.pid, "VmHWM")) / 1024)
    except (OSError, ValueError):  # already exited
        pass
    stop_pid(p, 10)
    API["proc"] = API["config"] = None

def ensure_api(config: dict) -> None:
    """(Re)starts the API unless it already runs with exactly these env overrides."""
    if API["proc"] is None or API["config"] != config:
        stop_api()
        start_api(config)

def wait_idle() -> None:
    """Waits (<= 60 s) until the API uses < 5 ticks per 0.5 s: requests still in flight when wrk
    stops (queued logins, their job pushes) would skew the next measurement."""
    start = time.monotonic()
    prev = api_ticks()
    while time.monotonic() - start < 60:
        time.sleep(0.5)
        now = api_ticks()
        if now - prev < 5:
            if time.monotonic() - start > 2:
                log(f"api idle after ~{time.monotonic() - start:.0f} s")
            return
        prev = now
    log("WARNING: api still busy after 60 s; measuring anyway")

def worker_env(noop: bool = False) -> dict[str, str]:
    # Mail becomes .eml files; two workers on one host would both bind the metrics port.
    # WORKER_BENCH_NOOP: the worker also consumes the bench-only no-op queue ({prefix}:jobs:noop).
    return {**base_env(), "MAIL_DIR": str(WORK / "mail"), "SMTP_URL": "",
            "WORKER_METRICS_ADDR": "off", "WORKER_CONCURRENCY": K["WORKER_CONCURRENCY"],
            **({"WORKER_BENCH_NOOP": "true"} if noop else {})}

def start_workers(k: int, noop: bool = False) -> None:
    if not WLOG["started"]:  # the log of this run only
        WORKER_LOG.write_text("")
        WLOG["started"] = True
    WLOG["mark"] = len(WORKER_LOG.read_text().splitlines())
    for _ in range(k):
        with open(WORKER_LOG, "a") as f:
            f.write(f"=== worker, WORKER_CONCURRENCY={K['WORKER_CONCURRENCY']}, "
                    f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}\n")
            f.flush()
            WORKERS.append(subprocess.Popen([WORKER_BIN, "run"], env=worker_env(noop), stdout=f, stderr=f))

def check_workers() -> None:
    for p in WORKERS:
        if p.poll() is not None:
            sys.stderr.write("".join(WORKER_LOG.read_text().splitlines(True)[-20:]))
            die(f"worker {p.pid} exited unexpectedly (log: {WORKER_LOG})")

def stop_workers(label: str) -> None:
    """SIGTERM to every worker (a graceful stop drains in-flight jobs and exits 0), then reports
    the ERROR lines they logged."""
    t0 = time.monotonic()
    for p in WORKERS:
        p.terminate()
    for p in WORKERS:
        rc = stop_pid(p, 30)
        if rc != 0:
            add_warning(f"worker {p.pid} exited with status {rc} after SIGTERM (expected 0; log: {WORKER_LOG})")
    if time.monotonic() - t0 > 2:
        log(f"workers stopped after ~{time.monotonic() - t0:.0f} s")
    WORKERS.clear()
    errors = [l for l in WORKER_LOG.read_text().splitlines()[WLOG["mark"]:]
              if '"level":"ERROR"' in l]
    if errors:
        first = re.sub(r'.*"message":"([^"]*)".*', r"\1", errors[0])
        first = re.sub(r" script: [0-9a-f]*.*", "", first)[:200]
        if "too many results to unpack" in first:
            first += (" — apalis fetch saw > ~8,000 due scheduled jobs before the chunked promotion"
                      " ran; that queue's worker restarted after 1 s")
        add_warning(f"{label}: {len(errors)} error(s) in the worker log (first: {first}; {WORKER_LOG})")

def clean_queues() -> None:
    """Deletes every job key of the bench prefix and the unfinished outbox rows of the bench
    database, so a measurement starts from an empty queue: the outbox is the queue's source of
    truth, and a worker re-pushes its unfinished rows (at once when the Redis marker is gone)."""
    redis_del(f"{REDIS_PREFIX}:jobs:*")
    n = int(pg_q("with d as (delete from outbox where finished_at is null returning 1) select count(*) from d"))
    if n:
        log(f"discarded {n} unfinished outbox rows of earlier runs")

def bench_rows() -> int:
    return int(pg_q("select count(*) from audit_log where request_id = 'bench'"))

def bench_enqueue(n: int, kind: str = "audit") -> None:
    out = cmd([WORKER_BIN, "bench-enqueue", f"--{kind}", n], worker_env(), "worker bench-enqueue").strip()
    if out != str(n):
        die(f"worker bench-enqueue --{kind} {n} printed '{out}'")

NOOP_QUEUE = f"{REDIS_PREFIX}:jobs:noop"
# Tasks of the no-op queue not yet acknowledged: scheduled, active, or in some worker's inflight set.
NOOP_LEFT = """local n = redis.call('zcard', KEYS[1]) + redis.call('llen', KEYS[2])
for _, k in ipairs(redis.call('keys', ARGV[1])) do n = n + redis.call('scard', k) end
return n"""

def noop_left() -> int:
    return int(redis("eval", NOOP_LEFT, "2", f"{NOOP_QUEUE}:scheduled", f"{NOOP_QUEUE}:active",
                     f"{NOOP_QUEUE}:inflight:*"))

def wait_worker_ready() -> None:
    """Enqueues one synthetic job and waits (<= 30 s) until a worker has written it."""
    before, deadline = bench_rows(), time.monotonic() + 30
    bench_enqueue(1)
    while bench_rows() <= before:
        check_workers()
        if time.monotonic() > deadline:
            die(f"the worker did not process a job within 30 s (log: {WORKER_LOG})")
        time.sleep(0.1)

# ------------------------------------------------------------------- wrk ---

def wrk_args(run: Run, duration: str) -> list[str]:
    args = ["wrk", "-t", knob(run.threads), "-c", knob(run.conns), "-d", duration,
            "--timeout", K["WRK_TIMEOUT"], "--latency"]
    if run.auth:
        args += ["-H", f"Authorization: Bearer {V['token_' + run.auth]}"]
    lua = LUA[run.script] if run.script else None
    if lua is None and run.method != "GET":
        body = fill(run.body or "").replace("\\", "\\\\").replace('"', '\\"')
        lua = (f'wrk.method = "{run.method}"\nwrk.body = "{body}"\n'
               'wrk.headers["Content-Type"] = "application/json"\n')
    if lua:
        script = WORK / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', run.name)}.lua"
        script.write_text(fill(lua))
        args += ["-s", str(script)]
    return args + [BASE_URL + fill(run.path)]

def wrk_start(run: Run, duration: str) -> subprocess.Popen:
    p = subprocess.Popen(wrk_args(run, duration), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    BACKGROUND.append(p)
    return p

def wrk_finish(p: subprocess.Popen) -> str:
    out = p.communicate()[0]
    BACKGROUND.remove(p)
    return out

def to_ms(v: str) -> str:
    """wrk latency ("850.00us", "1.20ms", "2.50s", "1.00m") -> milliseconds."""
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", v or "")
    if not m:
        return "?"
    x = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000, "h": 3600000}[m.group(2)]
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"

def wrk_parse(name: str, out: str, ramp_ok: bool) -> dict:
    def grab(pattern: str, default: str = "") -> str:
        m = re.search(pattern, out, re.M)
        return m.group(1) if m else default

    if not re.search(r"^Requests/sec:", out, re.M):
        sys.stderr.write(out)
        if API["proc"] is not None and API["proc"].poll() is not None:
            api_died(f"wrk run '{name}' failed")
        die(f"wrk run '{name}' failed")
    rps = float(grab(r"^Requests/sec:\s+([0-9.]+)"))
    r = {"rps": f"{rps:.1f}",
         "p50": to_ms(grab(r"^\s+50%\s+(\S+)")), "p99": to_ms(grab(r"^\s+99%\s+(\S+)")),
         "reqs": int(grab(r"^\s*(\d+) requests in ", "0")),
         "non2xx": int(grab(r"Non-2xx or 3xx responses:\s+(\d+)", "0")),
         "sockerr": grab(r"Socket errors:\s+(.*)$"), "out": out}
    R[name] = r
    ORDER.append(name)
    log(f"{name:<34} {r['rps']:>10} req/s  p50 {r['p50']:>8} ms  p99 {r['p99']:>8} ms  ({r['reqs']} requests)")
    if r["non2xx"]:
        add_warning(f"{name}: {r['non2xx']} non-2xx/3xx responses (see {API_LOG})")
    if sum(int(n) for n in re.findall(r"\d+", r["sockerr"])):
        add_warning(f"{name}: socket errors: {r['sockerr']}")
    conns, dur = int(grab(r"threads and (\d+) connections", "0")), grab(r"^Running (\S+) test @")
    if r["reqs"] == 0:
        add_warning(f"{name}: no request completed within {dur} (latency figures are meaningless)")
    elif r["reqs"] < conns:
        msg = (f"{name}: only {r['reqs']} responses for {conns} connections in {dur}: queueing "
               "start-up dominates, figures are not steady-state (run longer)")
        log(f"note: {msg}") if ramp_ok else add_warning(msg)
    return r

def wrk_run(run: Run, name: str) -> dict:
    """Waits for an idle API, warms up (same arguments, discarded), waits again, measures."""
    wait_idle()
    warmup = knob(run.warmup)
    if warmup not in ("", "0"):
        wrk_finish(wrk_start(run, warmup))
        wait_idle()
    return wrk_parse(name, wrk_finish(wrk_start(run, knob(run.duration))), run.ramp_ok)

def run_parallel(runs: list[Run]) -> None:
    """Starts the runs at once (no warm-up) and records them in table order."""
    wait_idle()
    procs = [wrk_start(r, knob(r.duration)) for r in runs]
    for r, p in zip(runs, procs):
        wrk_parse(fill(r.name), wrk_finish(p), r.ramp_ok)

def audit_drain(k: int) -> dict:
    """With an empty queue and no worker, enqueues JOBS_N audit jobs, starts k workers together and
    polls audit_log until all rows are there (<= JOBS_TIMEOUT)."""
    n = int(K["JOBS_N"])
    if WORKERS:
        die("audit_drain: a bench worker is still running")
    # The API must not push jobs while the queue keys are deleted (a task id could outlive its payload).
    wait_idle()
    clean_queues()
    t0 = time.time()
    bench_enqueue(n)
    log(f"enqueued {n} audit jobs in {time.time() - t0:.2f} s")
    # Nobody else may consume the queue: no rows may appear, nor jobs leave it, before ours start.
    before = bench_rows()
    time.sleep(0.5)
    queued = (int(redis("zcard", f"{REDIS_PREFIX}:jobs:audit:scheduled"))
              + int(redis("llen", f"{REDIS_PREFIX}:jobs:audit:active")))
    if bench_rows() != before or queued != n:
        die(f"audit jobs are consumed without a bench worker ({queued} of {n} still queued): another "
            f"worker with REDIS_PREFIX={REDIS_PREFIX} is running; stop it first")
    start = time.time()
    start_workers(k)
    deadline = time.monotonic() + int(K["JOBS_TIMEOUT"])
    while (count := bench_rows()) < before + n:
        check_workers()
        if time.monotonic() >= deadline:
            add_warning(f"audit drain with {k} worker(s): only {count - before} of {n} jobs done "
                        f"after {K['JOBS_TIMEOUT']} s (figures cover those)")
            break
        time.sleep(0.1)
    first, last = (pg_q("select extract(epoch from min(recorded_at)), extract(epoch from max(recorded_at))"
                        f" from audit_log where request_id = 'bench' and recorded_at >= to_timestamp({start})")
                   .split() + ["", ""])[:2]
    cpu = " + ".join(f"{cpu_ticks(p.pid) / CLK_TCK:.1f}" for p in WORKERS)
    stop_workers(f"audit drain, {k} worker(s)")
    d = {"done": count - before, "cpu": cpu, "total": "n/a", "boot": "n/a", "rate": "0", "steady": "0"}
    if d["done"] and first:
        f, l = float(first), float(last)
        d.update(total=f"{l - start:.2f}", boot=f"{f - start:.2f}",
                 rate=f"{d['done'] / (l - start) if l > start else 0:.0f}",
                 steady=f"{(d['done'] - 1) / (l - f) if l > f else 0:.0f}")
    log(f"audit drain, {k} worker(s): {d['done']} jobs in {d['total']} s = {d['rate']} jobs/s (first row "
        f"after {d['boot']} s; {d['steady']} jobs/s after it; worker CPU {d['cpu']} s)")
    return d

def noop_drain(k: int) -> dict:
    """Like audit_drain, with JOBS_N no-op jobs (a bench-only queue whose handler only acknowledges):
    the cost of the queue itself. Polls Redis until no task is scheduled, active or in flight."""
    n = int(K["JOBS_N"])
    if WORKERS:
        die("noop_drain: a bench worker is still running")
    wait_idle()
    clean_queues()
    t0 = time.time()
    bench_enqueue(n, "noop")
    log(f"enqueued {n} no-op jobs in {time.time() - t0:.2f} s")
    time.sleep(0.5)
    if (left := noop_left()) != n:
        die(f"no-op jobs are consumed without a bench worker ({left} of {n} still queued): another worker "
            f"with REDIS_PREFIX={REDIS_PREFIX} and WORKER_BENCH_NOOP=true is running; stop it first")
    start = time.time()
    start_workers(k, noop=True)
    deadline, first, left = time.monotonic() + int(K["JOBS_TIMEOUT"]), None, n
    while (left := noop_left()) > 0:
        if first is None and left < n:
            first = time.time()
        check_workers()
        if time.monotonic() >= deadline:
            add_warning(f"no-op drain with {k} worker(s): {left} of {n} jobs left after {K['JOBS_TIMEOUT']} s")
            break
        time.sleep(0.02)
    end = time.time()
    cpu = " + ".join(f"{cpu_ticks(p.pid) / CLK_TCK:.1f}" for p in WORKERS)
    stop_workers(f"no-op drain, {k} worker(s)")
    done = n - left
    first = first or end
    d = {"done": done, "cpu": cpu, "total": f"{end - start:.2f}", "boot": f"{first - start:.2f}",
         "rate": f"{done / (end - start):.0f}", "steady": f"{done / (end - first) if end > first else 0:.0f}"}
    log(f"no-op drain, {k} worker(s): {done} jobs in {d['total']} s = {d['rate']} jobs/s (first fetch "
        f"after {d['boot']} s; {d['steady']} jobs/s after it; worker CPU {cpu} s)")
    return d

def run_one(run: Run, section_api: dict) -> None:
    """Interprets one row of SCENARIOS."""
    ensure_api({**section_api, **run.api})
    name = fill(run.name)
    if run.kind == "drain":
        R[name] = audit_drain(run.workers)
        return
    if run.kind == "noop":
        R[name] = noop_drain(run.workers)
        return
    if run.kind == "baseline":
        if knob(run.conns) == K["CONNS"]:  # the /health/live of this run at CONNS, measured once
            run, name = Run(run.section, HEALTH), HEALTH
        if name in R:
            return
    if run.before:
        HOOKS[run.before](run)
    t0 = time.time()
    if run.workers:  # the backlog of earlier runs must not be worked off during this one
        wait_idle()
        clean_queues()
        t0 = time.time()
        start_workers(run.workers)
        wait_worker_ready()
    if run.cpu:
        wait_idle()
        c0 = api_ticks()
    r = wrk_run(run, name)
    if run.cpu:  # did the API get the cores? (on a shared machine it may not)
        r["cores"] = f"{(api_ticks() - c0) / CLK_TCK / dur_s(knob(run.duration)):.2f}"
    if run.after:
        HOOKS[run.after](run, r, t0)
    if run.workers:
        check_workers()
        stop_workers(name)

# -------------------------------------------------------- sections/hooks ---

def page_nonempty(run: Run) -> None:
    _, d = get_ok(fill(run.path), V["token_seed"])
    if not d["items"]:
        add_warning(f"{fill(run.name)}: the page is empty (measuring anyway)")

def x_cache(token: str) -> str:
    return get_ok("/v1/users", token)[0].get("X-Cache", "")

def expect_miss(run: Run) -> None:
    if (c := x_cache(V["token_admin"])) != "miss":
        die(f"GET /v1/users with CACHE_ENABLED=false answered X-Cache '{c}'")

def expect_hit(run: Run, r: dict, t0: float) -> None:
    if (c := x_cache(V["token_admin"])) != "hit":
        add_warning(f"{fill(run.name)}: X-Cache '{c}' right after the run (expected hit)")

def signup_backlog(run: Run, r: dict, t0: float) -> None:
    """Did the worker keep up? Signups since it started vs their audit rows, right after the run."""
    r["users"], r["rows"] = pg_q(
        f"select (select count(*) from users where created_at >= to_timestamp({t0})), (select count(*)"
        f" from audit_log where event_type = 'signup' and occurred_at >= to_timestamp({t0}))").split()

def sign_webhooks(run: Run) -> None:
    """One signed payment.succeeded per pending order (the checkout runs made them), signed now."""
    import hashlib
    import hmac
    rows = pg_q("select id || ',' || total_cents || ',' || currency from orders "
                "where status = 'pending_payment' order by created_at limit 50000").split()
    if not rows:
        die("sign_webhooks: no pending orders (did the checkout runs fail?)")
    t = int(time.time())
    path = WORK / "webhooks.tsv"
    with open(path, "w") as f:
        for i, row in enumerate(rows):
            oid, total, cur = row.split(",")
            body = json.dumps({"id": f"evt_bench_{t}_{i}", "type": "payment.succeeded",
                               "data": {"order_id": oid, "amount_cents": int(total), "currency": cur}},
                              separators=(",", ":"))
            mac = hmac.new(FIXED["WEBHOOK_SECRET"].encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
            f.write(f"t={t},v1={mac}\t{body}\n")
    V["webhook_file"], V["webhook_events"] = str(path), str(len(rows))

HOOKS: dict[str, Callable] = {f.__name__: f for f in (page_nonempty, expect_miss, expect_hit, signup_backlog,
                                                       sign_webhooks)}

def auth_setup() -> None:
    _, d = expect(201, "signup", "POST", "/v1/auth/signup",
                  body={"email": FIXED["BENCH_EMAIL"], "password": FIXED["BENCH_PASSWORD"], "name": "Bench"})
    V["token_bench"] = d.get("access_token") or die("signup returned no access_token")
    login(FIXED["BENCH_EMAIL"], FIXED["BENCH_PASSWORD"])  # the login runs' body must answer 200

def auth_summary() -> None:
    login_name = fill("POST /v1/auth/login (c={LOGIN_CONNS})")
    lg, ms = R[login_name], V["bcrypt_ms"]
    note("me/health ratio", pct(R[ME]["rps"], R[HEALTH]["rps"]))
    ceiling = f"{NPROC / (num(ms) / 1000):.1f}" if num(ms) > 0 else "0"
    ratio = "n/a (non-2xx responses)" if lg["non2xx"] else pct(lg["rps"], ceiling)
    note("login vs bcrypt ceiling", f"{ratio} ({lg['rps']} of {ceiling} req/s = {NPROC} cores / {ms} ms "
         f"per hash at cost {K['BCRYPT_COST']}; the api used {lg['cores']} of {NPROC} cores)")
    probe = R[fill("GET /health/live (c={PROBE_CONNS}) during logins")]
    note(f"health p99 under {K['LOGIN_CONNS']} concurrent logins", f"{probe['p99']} ms (p50 {probe['p50']} "
         f"ms; idle at c={K['CONNS']}: p99 {R[HEALTH]['p99']} ms)")

def jobs_summary() -> None:
    one, two = R["audit drain, 1 worker(s)"], R["audit drain, 2 worker(s)"]
    note("audit jobs/s (1 worker)", f"{one['rate']} ({one['done']} jobs in {one['total']} s from worker start; "
         f"first row after {one['boot']} s, {one['steady']} jobs/s from then on; worker CPU {one['cpu']} s; "
         f"WORKER_CONCURRENCY={K['WORKER_CONCURRENCY']})")
    note("audit jobs/s (2 workers)", f"{two['rate']} total, {num(two['rate']) / 2:.0f} per process, "
         f"{pct(two['rate'], one['rate'])} of 1 worker ({two['done']} jobs in {two['total']} s; first row after "
         f"{two['boot']} s, {two['steady']} jobs/s from then on; worker CPU {two['cpu']} s)")
    noop = R["no-op drain, 1 worker"]
    note("no-op jobs/s (1 worker)", f"{noop['rate']} ({noop['done']} jobs in {noop['total']} s from worker start "
         f"until none was left in Redis; first fetch after {noop['boot']} s, {noop['steady']} jobs/s from then "
         f"on; worker CPU {noop['cpu']} s)")
    without, with_ = (R[fill(r.name)] for r in SCENARIOS if r.section == "jobs" and r.kind == "wrk")
    for r in SCENARIOS:
        if r.section == "jobs" and r.kind == "wrk" and R[fill(r.name)]["non2xx"]:
            status = http("POST", "/v1/auth/signup", timeout=10, body={
                "email": f"probe-{os.urandom(4).hex()}@bench.example.com",
                "password": FIXED["BENCH_PASSWORD"], "name": "Bench"})[0]
            add_warning(f"{fill(r.name)}: non-2xx responses (409 = e-mail collisions in the wrk script, 429 = "
                        f"rate limited); one more signup now answers HTTP {status}")
            break
    note("signup p50/p99 without worker", f"{without['p50']} / {without['p99']} ms ({without['rps']} req/s)")
    note("signup p50/p99 with worker", f"{with_['p50']} / {with_['p99']} ms ({with_['rps']} req/s); difference "
         f"p50 {num(with_['p50']) - num(without['p50']):+.2f} ms, p99 {num(with_['p99']) - num(without['p99']):+.2f}"
         f" ms; worker had written {with_['rows']} of {with_['users']} signup audit rows when the run ended")

def tasks_prepare() -> None:
    """Creates TASKS_DB if missing, migrates it, and seeds it unless it has TASKS_SEED_ROWS tasks."""
    env = {**base_env(), "DATABASE_URL": FIXED["TASKS_URL"]}
    if not pg_q(f"select 1 from pg_database where datname = '{TASKS_DB}'", "postgres"):
        log(f"creating database {TASKS_DB} (kept between runs)")
        cmd(["createdb", *PG, TASKS_DB], what="createdb")
    cmd([API_BIN, "migrate"], env, f"api migrate of {TASKS_DB}")
    n = int(pg_q("select count(*) from tasks", TASKS_DB))
    if n >= TASKS_SEED_ROWS:
        log(f"{TASKS_DB} has {n} tasks: not seeding")
        V["tasks_seed"] = f"{n} tasks in {TASKS_DB} (kept from an earlier run, not seeded)"
        return
    log(f"{TASKS_DB} has {n} tasks: seeding {TASKS_SEED_USERS} users / {TASKS_SEED_ROWS} tasks (~45 s)")
    t0 = time.monotonic()
    out = cmd([API_BIN, "seed", "--users", TASKS_SEED_USERS, "--tasks", TASKS_SEED_ROWS],
              {**env, "RUST_LOG": "info"}, f"api seed of {TASKS_DB}", tail=20)
    if "bulk seed done" not in out:
        log("WARNING: api seed did not log 'bulk seed done'")
    n, s = int(pg_q("select count(*) from tasks", TASKS_DB)), int(time.monotonic() - t0)
    if n < TASKS_SEED_ROWS:
        die(f"after seeding, {TASKS_DB} has only {n} tasks")
    log(f"seeded {TASKS_DB} in {s} s ({n} tasks)")
    V["tasks_seed"] = f"{n} tasks in {TASKS_DB} (seeded in this run: {s} s)"

def tasks_cleanup() -> None:
    """Deletes the tasks the create run added, then vacuums: their dead index entries would sit at
    the start of TASKS_EMAIL's -created_at range and slow every later default-sort page."""
    n = int(pg_q("with d as (delete from tasks where title = 'bench task' and user_id in (select id "
                 f"from users where email = '{FIXED['TASKS_EMAIL']}') returning 1) select count(*) from d", TASKS_DB))
    if n > 0:
        log(f"deleted {n} tasks made by the create scenario")
    # Deleted behind the API's back: its cached task pages go too.
    redis_del(f"{REDIS_PREFIX}:cache:tasks:*")
    pg_q("vacuum (analyze) tasks, task_categories", TASKS_DB)

def tasks_setup() -> None:
    tasks_cleanup()
    token = V["token_seed"] = login(FIXED["TASKS_EMAIL"], FIXED["SEED_PASSWORD"])
    url, cursor = "/v1/tasks?status=todo,in_progress&sort=due_at&limit=20", ""
    for i in range(1, 26):  # deep page: follow next_cursor 25 times (rows ~501-520)
        _, d = get_ok(url + (f"&cursor={cursor}" if cursor else ""), token)
        cursor = urllib.parse.quote(d["next_cursor"] or "", safe="")
        if not cursor:
            die(f"deep page: no next_cursor on page {i} of {url}")
    V["deep_cursor"] = cursor
    V["cat_id"] = str(get_ok("/v1/categories", token)[1]["items"][0]["id"])
    V["due"] = f"{datetime.now(timezone.utc) + timedelta(days=7):%Y-%m-%dT%H:%M:%SZ}"
    V["task_id"] = str(get_ok("/v1/tasks?sort=created_at&limit=1", token)[1]["items"][0]["id"])

def tasks_teardown() -> None:
    wait_idle()
    tasks_cleanup()

# The default first page's statement as the API sends it (crates/db/src/tasks.rs), and the same
# without its categories column: what Postgres alone does with it, the page's ceiling here.
PAGE_SQL = ("SELECT tasks.id, tasks.user_id, tasks.title, tasks.description, tasks.status, tasks.priority, "
            "tasks.due_at, tasks.completed_at, tasks.created_at, tasks.updated_at, tasks.deleted_at{cats} "
            "FROM tasks WHERE tasks.user_id = '{user}' AND tasks.deleted_at IS NULL "
            "ORDER BY tasks.created_at DESC, tasks.id DESC LIMIT 21;\n")
PAGE_CATS = (", array(select (c.id, c.name) from task_categories tc join categories c on c.id = tc.category_id "
             "where tc.task_id = tasks.id order by c.name, c.id)")

def page_ceiling() -> None:
    """pgbench -M prepared on the default first page's statement, with and without its categories
    (c=16, TASKS_DURATION): Postgres' own rate for it on this machine, nothing else running."""
    if not shutil.which("pgbench"):
        add_warning("pgbench not found: the task page's Postgres ceiling was not measured")
        return
    user = pg_q(f"select id from users where email = '{FIXED['TASKS_EMAIL']}'", TASKS_DB)
    for label, cats in (("with its categories", PAGE_CATS), ("without its categories", "")):
        script = WORK / f"page-{len(cats)}.sql"
        script.write_text(PAGE_SQL.format(cats=cats, user=user))
        out = cmd(["pgbench", *(a for a in PG if a != "-w"), "-n", "-M", "prepared", "-c", "16", "-j", "2", "-T",
                   str(int(dur_s(knob("TASKS_DURATION")))), "-f", str(script), TASKS_DB], what="pgbench")
        m = re.search(r"^tps = ([\d.]+)", out, re.M)
        V[f"pgbench {label}"] = f"{float(m.group(1)):.0f}" if m else "n/a"
        log(f"pgbench, default first page {label}: {V[f'pgbench {label}']} statements/s")

def tasks_summary() -> None:
    health = HEALTH if K["TASKS_CONNS"] == K["CONNS"] else fill("GET /health/live (c={TASKS_CONNS})")
    lists = [fill(r.name) for r in SCENARIOS if r.tag == "list"]
    worst = max(lists, key=lambda n: num(R[n]["p99"]))
    slowest = min(lists, key=lambda n: num(R[n]["rps"]))
    h, default = R[health]["rps"], R[lists[0]]["rps"]
    note("tasks data", f"{V['tasks_seed']}; as {FIXED['TASKS_EMAIL']}; c={K['TASKS_CONNS']}, "
         f"{K['TASKS_DURATION']} per scenario (warm-up: {K['WARMUP']} before the first, then {K['TASKS_WARMUP']})")
    note(f"tasks list p99, max over {len(lists)} list scenarios", f"{R[worst]['p99']} ms ({worst}; aim < 20 ms)")
    page_ceiling()
    if "pgbench with its categories" in V:
        note("default first page in Postgres alone (pgbench -M prepared, c=16)",
             f"{V['pgbench with its categories']} statements/s with its categories, "
             f"{V['pgbench without its categories']} without; the API served {default} pages/s")
    note(f"tasks list req/s vs /health/live (c={K['TASKS_CONNS']}, {h} req/s)",
         f"default first page {default} = {pct(default, h)}; min {R[slowest]['rps']} = "
         f"{pct(R[slowest]['rps'], h)} ({slowest}); aim ≥ 25%")
    uncached = next((fill(r.name) for r in SCENARIOS if r.tag == "uncached"), None)
    if uncached in R:
        u = R[uncached]
        note("default first page with the cache off (every page from Postgres)",
             f"{u['rps']} req/s = {pct(u['rps'], h)} of /health/live, p99 {u['p99']} ms")
    mix = next((fill(r.name) for r in SCENARIOS if r.tag == "mix"), None)
    if mix in R:
        m = re.search(r"^cache-mix: hits=(\d+) misses=(\d+) other=(\d+)", R[mix]["out"], re.M)
        if not m:
            die(f"{mix}: the wrk script printed no cache counts")
        hits, misses, other = map(int, m.groups())
        # Each PATCH voids the user's pages: the GETs racing it miss until one has refilled them.
        note(f"task page hit rate, {mix.removesuffix(' (cached)')}",
             f"{pct(hits, hits + misses)} of GETs ({hits} hit, {misses} miss; {other} responses without "
             f"X-Cache = PATCHes); {R[mix]['rps']} req/s = {pct(R[mix]['rps'], h)} of /health/live, "
             f"p99 {R[mix]['p99']} ms")

def cache_setup() -> None:
    # Users for the list (seed{i}@seed.example.com) and the admin; seeded behind the API's back,
    # so the cache starts empty.
    cmd([API_BIN, "seed", "--users", K["CACHE_USERS"], "--tasks", 1], what=f"api seed --users {K['CACHE_USERS']}", tail=20)
    cmd([API_BIN, "create-admin", "--email", FIXED["ADMIN_EMAIL"], "--password", FIXED["ADMIN_PASSWORD"]],
        what="api create-admin")
    redis_del(f"{REDIS_PREFIX}:cache:*")
    token = V["token_admin"] = login(FIXED["ADMIN_EMAIL"], FIXED["ADMIN_PASSWORD"])
    _, d = get_ok("/v1/users", token)
    if not (len(d["items"]) == 20 and d["next_cursor"]):
        die(f"GET /v1/users: expected 20 users and a next page, got {len(d['items'])} users")
    if (c := x_cache(token)) != "hit":
        die(f"GET /v1/users: second read answered X-Cache '{c}', expected hit (CACHE_ENABLED?)")
    V["cache_target"] = pg_q("select id from users where email = 'seed1@seed.example.com' and deleted_at is null") \
        or die("seed1@seed.example.com not found")

def cache_summary() -> None:
    cached, uncached = R["GET /v1/users (admin, cached: hit)"], R["GET /v1/users (admin, CACHE_ENABLED=false)"]
    mix_name = fill("GET /v1/users + {WRITE_PCT}% PATCH /v1/users/{id} (cached)")
    h = R[HEALTH]["rps"]
    extra = f"; {ME}: {pct(R[ME]['rps'], h)}, the ceiling of any authenticated route" if ME in R else ""
    note("cached user list vs /health/live", f"{pct(cached['rps'], h)} ({cached['rps']} of {h} req/s; aim ≥ 50%{extra})")
    ratio = f"{num(cached['rps']) / num(uncached['rps']):.2f}×" if num(uncached["rps"]) > 0 else "n/a"
    note("cached vs uncached user list", f"{ratio} ({cached['rps']} / {uncached['rps']} req/s; aim ≥ 3×)")
    m = re.search(r"^cache-mix: hits=(\d+) misses=(\d+) other=(\d+)", R[mix_name]["out"], re.M)
    if not m:
        die(f"{mix_name}: the wrk script printed no cache counts")
    hits, misses, other = map(int, m.groups())
    # Each PATCH bumps the namespace's generation, so the next GET misses: at most 1 - PATCHes/GETs.
    note(f"cache hit rate, {mix_name.removesuffix(' (cached)')}", f"{pct(hits, hits + misses)} of GETs ({hits} hit, "
         f"{misses} miss; {other} responses without X-Cache = PATCHes; one miss per write would give "
         f"{pct(hits + misses - other, hits + misses)}); aim ≥ 95%)")

def shop_setup() -> None:
    # The buyer (signed up by the auth section, or here) and the products, inserted in SQL.
    if "token_bench" not in V:
        auth_setup()
    n = int(K["SHOP_PRODUCTS"])
    pg_q("insert into products (id, sku, name, price_cents, currency, stock, initial_stock) "
         "select gen_random_uuid(), 'BENCH-' || i, 'Bench product ' || i, 100 + i, 'EUR', 1000000000, 1000000000 "
         f"from generate_series(0, {n}) i on conflict do nothing")
    V["hot_id"] = pg_q("select id from products where sku = 'BENCH-0'")
    ids = pg_q(f"select id from products where sku like 'BENCH-%' and sku <> 'BENCH-0' limit {n}").split()
    V["spread_ids"] = ", ".join(f'"{i}"' for i in ids)
    redis_del(f"{REDIS_PREFIX}:cache:*")
    status = http("POST", "/v1/orders", V["token_bench"],
                     body={"items": [{"product_id": V["hot_id"], "quantity": 1}]},
                     headers={"Idempotency-Key": f"bench-probe-{os.urandom(4).hex()}"})[0]
    if status != 201:
        die(f"a probe checkout answered HTTP {status}")

def shop_summary() -> None:
    h = R[HEALTH]["rps"]
    hot = R[fill("POST /v1/orders (hot product, c={SHOP_CONNS})")]
    spread = R[fill("POST /v1/orders (spread over {SHOP_PRODUCTS} products, c={SHOP_CONNS})")]
    hook = R[fill("POST /v1/webhooks/payments (c={SHOP_CONNS})")]
    cached, uncached = R["GET /v1/products (anonymous, cached)"], R["GET /v1/products (anonymous, CACHE_ENABLED=false)"]
    note("checkout orders/s, hot product", f"{hot['rps']} (p99 {hot['p99']} ms)")
    note("checkout orders/s, spread", f"{spread['rps']} (p99 {spread['p99']} ms; aim p99 < 50 ms at c={K['SHOP_CONNS']})")
    note("webhook deliveries/s", f"{hook['rps']} (p99 {hook['p99']} ms; aim < 50 ms; {V.get('webhook_events')} "
         "distinct signed events, cycled: repeats answer `duplicate`)")
    note("cached catalogue vs /health/live", f"{pct(cached['rps'], h)} ({cached['rps']} of {h} req/s; aim ≥ 50%)")
    ratio = f"{num(cached['rps']) / num(uncached['rps']):.2f}×" if num(uncached["rps"]) > 0 else "n/a"
    note("cached vs uncached catalogue", f"{ratio} ({cached['rps']} / {uncached['rps']} req/s)")
    mix = R[fill("GET /v1/products/{hot_id} during checkouts (c=16)")]
    m = re.search(r"^cache-mix: hits=(\d+) misses=(\d+) other=(\d+)", mix["out"], re.M)
    if m:
        hits, misses, _ = map(int, m.groups())
        note("catalogue hit rate under a checkout load", f"{pct(hits, hits + misses)} of reads ({hits} hit, {misses} "
             "miss: one miss per 900 ms entry life per key, plus admin bumps)")

@dataclass
class Section:
    api: dict = field(default_factory=dict)  # env overrides of the API for the whole section
    prepare: Callable | None = None          # before the API is (re)started for the section
    setup: Callable | None = None            # once the section's API answers
    teardown: Callable | None = None
    summary: Callable | None = None          # adds the section's notes

SECTIONS = {
    "auth": Section(setup=auth_setup, summary=auth_summary),
    "jobs": Section(summary=jobs_summary),
    "tasks": Section(api={"DATABASE_URL": "{TASKS_URL}"}, prepare=tasks_prepare, setup=tasks_setup,
                     teardown=tasks_teardown, summary=tasks_summary),
    "cache": Section(setup=cache_setup, summary=cache_summary),
    "shop": Section(api={"PAYMENT_WEBHOOK_SECRET": FIXED["WEBHOOK_SECRET"]}, setup=shop_setup, summary=shop_summary),
}

def run_section(name: str) -> None:
    sec = SECTIONS[name]
    runs = [r for r in SCENARIOS if r.section == name]
    if sec.prepare:
        sec.prepare()
    ensure_api({**sec.api, **runs[0].api})
    if sec.setup:
        sec.setup()
    i = 0
    while i < len(runs):
        if runs[i].parallel:
            group = [r for r in runs[i:] if r.parallel == runs[i].parallel]
            ensure_api({**sec.api, **runs[i].api})
            run_parallel(group)
            i += len(group)
        else:
            run_one(runs[i], sec.api)
            i += 1
    if sec.teardown:
        sec.teardown()
    if sec.summary:
        sec.summary()

# ---------------------------------------------------------------- report ---

def aims_table() -> list[str]:
    """Issue 13's table: every figure this run measured, against its aim (ratios to /health/live
    of the same run; the tasks page against /health/live at TASKS_CONNS)."""
    rows = []
    def ratio_row(label: str, name: str, aim: float, health: str = HEALTH, extra: str = "") -> None:
        if name in R and health in R and num(R[health]["rps"]) > 0:
            r = num(R[name]["rps"]) / num(R[health]["rps"])
            rows.append((label, f"{r:.2f} ({R[name]['rps']} / {R[health]['rps']} req/s){extra}", f"≥ {aim:.2f}",
                         r >= aim))
    ratio_row("`GET /v1/users/me`", ME, 0.40)
    ratio_row("`GET /v1/users/me`, rate limits on (production default)", ME_LIMITED, 0.40)
    ratio_row("`GET /v1/users` (admin, cached)", "GET /v1/users (admin, cached: hit)", 0.35)
    first = "GET /v1/tasks (first page, -created_at = default)"
    if first in R:
        health = HEALTH if K["TASKS_CONNS"] == K["CONNS"] else fill("GET /health/live (c={TASKS_CONNS})")
        lists = [fill(r.name) for r in SCENARIOS if r.tag == "list" and fill(r.name) in R]
        firsts = [n for n in lists if "first page" in n]
        p99 = max(num(R[n]["p99"]) for n in firsts)
        before = len(rows)
        uncached = next((fill(r.name) for r in SCENARIOS if r.tag == "uncached"), None)
        from_pg = ""
        if uncached in R and num(R[health]["rps"]) > 0:
            u = R[uncached]
            from_pg = (f"; from Postgres (CACHE_ENABLED=false) {num(u['rps']) / num(R[health]['rps']):.2f}, "
                       f"p99 {u['p99']} ms")
        ratio_row(f"`GET /v1/tasks` first page at 1 M rows (c={K['TASKS_CONNS']}, cached per user)", first, 0.15,
                  health, f", p99 ≤ {p99:g} ms over the {len(firsts)} first-page sorts{from_pg}")
        if len(rows) > before:
            label, value, aim, met = rows[-1]
            rows[-1] = (label, value, f"{aim}, p99 < 20 ms", met and p99 < 20)
    ratio_row("`GET /v1/products` (anonymous, cached)", "GET /v1/products (anonymous, cached)", 0.50)
    ratio_row("`GET /v1/products` (anonymous, cached), rate limits on", PRODUCTS_LIMITED, 0.50)
    for label, name, aim in (("audit jobs per worker process", "audit drain, 1 worker(s)", 5000),
                             ("no-op jobs drained per worker process", "no-op drain, 1 worker", 10000)):
        if name in R:
            rate = num(R[name]["rate"])
            rows.append((label, f"{rate:,.0f}/s", f"≥ {aim:,}/s", rate >= aim))
    if API["peak_rss"]:
        rows.append(("API RSS under all of the above", f"{API['peak_rss']:.1f} MB", "< 48 MB", API["peak_rss"] < 48))
    if not rows:
        return []
    return ["", "| issue 13 figure | this run | aim | met |", "|---|---|---|---|",
            *(f"| {label} | {value} | {aim} | {'yes' if met else 'no'} |" for label, value, aim, met in rows)]

def report(sections: list[str], stamp: str, quick: bool) -> None:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    lines = [f"## bench {stamp} @ {rev or 'unknown'}{'-dirty' if dirty else ''}", "",
             f"sections: {' '.join(sections)}{' (--quick)' if quick else ''}; DURATION={K['DURATION']} "
             f"CONNS={K['CONNS']} THREADS={K['THREADS']} LOGIN_CONNS={K['LOGIN_CONNS']} "
             f"LOGIN_DURATION={K['LOGIN_DURATION']} BCRYPT_COST={K['BCRYPT_COST']} "
             f"DATABASE_POOL_SIZE={K['BENCH_DB_POOL']}; {NPROC} cores", "",
             "| scenario | req/s | p50 (ms) | p99 (ms) |", "|---|---:|---:|---:|",
             *(f"| {n} | {R[n]['rps']} | {R[n]['p50']} | {R[n]['p99']} |" for n in ORDER), "",
             *(f"- {n}" for n in NOTES), *(f"- WARNING: {w}" for w in WARNINGS), *aims_table()]
    block = "\n".join(lines)
    print(f"\n{block}", flush=True)
    path = OUT_DIR / f"results-{stamp}.md"
    with open(path, "a") as f:
        f.write(block + "\n\n")
    log(f"results appended to {path.relative_to(ROOT)}")

# ------------------------------------------------------------------ main ---

def ensure_tools(sections: list[str]) -> None:
    for t in ["wrk", "psql", "dropdb", "createdb"] + (["redis-cli"] if {"jobs", "cache"} & set(sections) else []):
        if not shutil.which(t):
            die(f"{t} is required (`just tools` installs wrk, `just services` PostgreSQL and Redis)")
    for b in [API_BIN] + ([WORKER_BIN] if "jobs" in sections else []):
        if not os.access(b, os.X_OK):
            die(f"{b} not found; run: cargo build --release --bin api --bin worker")

def reset_db() -> None:
    if subprocess.run(["psql", *PG, "-X", "-q", "-d", "postgres", "-tAc", "select 1"], capture_output=True).returncode:
        die("PostgreSQL does not answer at 127.0.0.1:5432 as postgres")
    log(f"recreating database {BENCH_DB}")
    cmd(["dropdb", *PG, "--if-exists", "--force", BENCH_DB],
        {**os.environ, "PGOPTIONS": "-c client_min_messages=warning"}, "dropdb")
    cmd(["createdb", *PG, BENCH_DB], what="createdb")

def cleanup() -> None:
    for p in BACKGROUND:
        p.kill()
    for p in WORKERS:
        stop_pid(p, 10)
    stop_api()
    shutil.rmtree(WORK, ignore_errors=True)

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 s per wrk run (also BENCH_QUICK=1)")
    ap.add_argument("sections", nargs="*", metavar="SECTION", help=f"{' '.join(SECTIONS)} or all")
    args = ap.parse_args()
    quick = args.quick or os.environ.get("BENCH_QUICK", "") not in ("", "0")
    sections = args.sections if args.sections and args.sections != ["all"] else list(SECTIONS)
    for s in sections:
        if s not in SECTIONS:
            log(f"error: unknown section '{s}' (known: {' '.join(SECTIONS)}, all)")
            return 1
    load_knobs(quick)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.chdir(ROOT)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    WORK.mkdir(mode=0o700)
    try:
        ensure_tools(sections)
        reset_db()
        V["bcrypt_ms"] = cmd([API_BIN, "bcrypt-timing"], what="api bcrypt-timing").strip()
        log(f"bcrypt: {V['bcrypt_ms']} ms per hash at cost {K['BCRYPT_COST']}")
        ensure_api({})
        for s in sections:
            log(f"section {s}")
            run_section(s)
        stop_api()
        note("peak RSS", f"{API['peak_rss']:.1f} MB (max VmHWM of the api serve processes of this run)")
        report(sections, stamp, quick)
        return 0
    except Die as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        cleanup()

if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Cross-checks the deployment files against the code (`just lint-deploy`; offline, < 1 s).

    check-deploy.py [--k8s OVERLAY=RENDERED.yaml ...]

Facts read from the source (no build needed):
  * the environment variables each binary reads: `var("X")`, `parsed("X", ..)`, `duration("X", ..)`,
    `std::env::var("X")`, clap's `env = "X"`, `RATE_LIMIT_<POLICY>` for every policy in the table of
    crates/api/src/config.rs, RUST_LOG (tracing's EnvFilter) — in the binary's crate and the
    workspace libraries it links (db, jobs, auth, domain);
  * the health paths (crates/api/src/routes/mod.rs), the `/metrics` route, the CLI subcommands,
    the API's shutdown timeout (startup.rs) and the worker's job timeout (run.rs);
  * the metric names the binaries export (`counter!`/`gauge!`/`histogram!`/`describe_*!`, with the
    `{pool}` names expanded to db/redis; histograms add _bucket/_sum/_count).

Then checks:
  * docker-compose.yml: every variable a service of our image sets is read by that service's binary
    (api or worker), published/exposed ports equal the ports in API_ADDR / WORKER_METRICS_ADDR,
    health checks call an existing subcommand or the metrics port, stop_grace_period covers the
    shutdown, the Prometheus scrape ports match;
  * every rendered Kubernetes overlay: the same for each container (env, envFrom ConfigMaps and
    Secrets resolved), container ports vs. the addresses configured, probes on existing health
    paths and named ports, Services/NetworkPolicies/Ingress/HPA/PDB referring to what exists,
    terminationGracePeriodSeconds >= preStop + shutdown; prod: APP_ENV=production,
    TRUSTED_PROXIES set, Ingress with TLS and a cert-manager issuer;
  * deploy/Dockerfile: EXPOSE = API_ADDR's port, HEALTHCHECK runs `api healthcheck`, the Rust image
    is >= the workspace rust-version and the same toolchain as the CI workflow;
  * every metric name used by the Grafana dashboard and the alert rules is one the binaries export.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
errors: list[str] = []
notes: list[str] = []


def err(msg: str) -> None:
    errors.append(msg)


def read(rel: str) -> str:
    return (ROOT / rel).read_text()


def rust_sources(crates: list[str]) -> str:
    out = []
    for c in crates:
        out += [p.read_text() for p in sorted((ROOT / "crates" / c / "src").rglob("*.rs"))]
    return "\n".join(out)


# ---------------------------------------------------------------- facts from the code
ENV_CALL = re.compile(r'\b(?:var|parsed|duration|env::var)\(\s*"([A-Z][A-Z0-9_]*)"')
CLAP_ENV = re.compile(r'\benv\s*=\s*"([A-Z][A-Z0-9_]*)"')
LIBS = ["db", "jobs", "auth", "domain"]


def env_read_by(crate: str) -> set[str]:
    src = rust_sources([crate] + [lib for lib in LIBS if (ROOT / "crates" / lib).is_dir()])
    names = set(ENV_CALL.findall(src)) | set(CLAP_ENV.findall(src))
    if "RATE_LIMIT_{name}" in src:
        policies = re.findall(r'\("([A-Z][A-Z0-9]*)",\s*"\d+/\d+"\)', read("crates/api/src/config.rs"))
        names |= {f"RATE_LIMIT_{p}" for p in policies}
    if "EnvFilter::try_from_default_env" in src or "EnvFilter::from_default_env" in src:
        names.add("RUST_LOG")
    # A binary that sets up `telemetry` honours the standard OTEL_* variables its SDK reads
    # (listed in crates/telemetry/src/lib.rs, OTEL_ENV), and the telemetry crate's own reads.
    if "telemetry::init(" in src and (ROOT / "crates" / "telemetry").is_dir():
        tsrc = rust_sources(["telemetry"])
        m = re.search(r"pub const OTEL_ENV: &\[&str\] = &\[(.*?)\];", tsrc, re.S)
        if not m:
            err("crates/telemetry/src/lib.rs: OTEL_ENV not found (parser out of date?)")
        else:
            names |= set(re.findall(r'"(OTEL_[A-Z0-9_]+)"', m.group(1)))
        names |= set(ENV_CALL.findall(tsrc))
        if "EnvFilter::try_from_default_env" in tsrc:
            names.add("RUST_LOG")
    return names


ENV = {"api": env_read_by("api"), "worker": env_read_by("worker")}
for b, names in ENV.items():
    if "DATABASE_URL" not in names:
        err(f"could not read the environment variables of {b} from the source (parser out of date?)")

routes_src = read("crates/api/src/routes/mod.rs")
HEALTH_PATHS = set(re.findall(r'web::resource\("(/health/[a-z]+)"\)', routes_src))
for p in ("/health/live", "/health/ready"):
    if p not in HEALTH_PATHS:
        err(f"{p} is not routed in crates/api/src/routes/mod.rs")
api_src = rust_sources(["api"])
if '"/metrics"' not in api_src:
    err('the API serves no "/metrics" route')


def subcommands(path: str) -> set[str]:
    src = read(path)
    m = re.search(r"pub enum Command \{(.*?)\n\}", src, re.S)
    if not m:
        return set()
    body = re.sub(r"///.*|#\[.*?\]", "", m.group(1))
    variants = re.findall(r"^\s{4}([A-Z][A-Za-z]*)\b", body, re.M)
    return {re.sub(r"(?<!^)([A-Z])", r"-\1", v).lower() for v in variants}


API_COMMANDS = subcommands("crates/api/src/cli.rs")
if "healthcheck" not in API_COMMANDS or "serve" not in API_COMMANDS or "migrate" not in API_COMMANDS:
    err(f"api subcommands not found as expected: {sorted(API_COMMANDS)}")

startup_src = read("crates/api/src/startup.rs")
m = re.search(r"SHUTDOWN_TIMEOUT_SECS: u64 = (\d+)", startup_src) or re.search(r"\.shutdown_timeout\((\d+)\)", startup_src)
API_SHUTDOWN = int(m.group(1)) if m else 30
# SHUTDOWN_DELAY's default (crates/api/src/config.rs): SIGTERM → not ready, still serving this long.
m = re.search(r"shutdown_delay: Duration::from_secs\((\d+)\)", read("crates/api/src/config.rs"))
API_DELAY_DEFAULT = int(m.group(1)) if m else 0
m = re.search(r"const JOB_TIMEOUT: Duration = Duration::from_secs\((\d+)\)", read("crates/worker/src/run.rs"))
JOB_TIMEOUT = int(m.group(1)) if m else 120

# metric names
METRIC_CALL = re.compile(
    r'\b(counter|gauge|histogram|describe_counter|describe_gauge|describe_histogram)!\(\s*"([a-z_:][a-z0-9_:]*)"'
)
POOL_FMT = re.compile(r'\b(counter|gauge|histogram|describe_counter|describe_gauge)!\(\s*format!\("\{pool\}(_[a-z_]+)"')
exported: set[str] = {"up"}  # Prometheus' own
for crate in ("api", "worker"):
    src = rust_sources([crate])
    for kind, name in METRIC_CALL.findall(src):
        exported.add(name)
        if "histogram" in kind:
            exported |= {name + "_bucket", name + "_sum", name + "_count"}
    for _, suffix in POOL_FMT.findall(src):
        exported |= {"db" + suffix, "redis" + suffix}


# ---------------------------------------------------------------- helpers
def port_of(addr: str | None) -> int | None:
    if not addr:
        return None
    m = re.search(r":(\d+)$", str(addr).strip())
    return int(m.group(1)) if m else None


def duration_s(v: str) -> float:
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(v).strip())
    if not m or not any(m.groups()):
        return float(v)
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


def delay_of(env: dict) -> float:
    v = env.get("SHUTDOWN_DELAY")
    if v is None:
        return API_DELAY_DEFAULT
    v = str(v).strip()
    if v in ("off", "0", "0s", "0ms"):
        return 0
    if v.endswith("ms"):
        return int(v[:-2]) / 1000
    return duration_s(v)


def check_env(where: str, binary: str, names) -> None:
    unknown = sorted(set(names) - ENV[binary])
    if unknown:
        err(f"{where}: {binary} does not read {', '.join(unknown)}")


# ---------------------------------------------------------------- Dockerfile
dockerfile = read("deploy/Dockerfile")
m = re.search(r"^ARG RUST_VERSION=(\d+\.\d+)", dockerfile, re.M)
rust_image = m.group(1) if m else None
msrv = re.search(r'^rust-version\s*=\s*"(\d+\.\d+)', read("Cargo.toml"), re.M)
if not rust_image:
    err("deploy/Dockerfile: no ARG RUST_VERSION")
elif msrv and tuple(map(int, rust_image.split("."))) < tuple(map(int, msrv.group(1).split("."))):
    err(f"deploy/Dockerfile: Rust {rust_image} is older than the workspace rust-version {msrv.group(1)}")
m = re.search(r"API_ADDR=(\S+)", dockerfile)
expose = re.findall(r"^EXPOSE (\d+)", dockerfile, re.M)
if not m or [str(port_of(m.group(1)))] != expose:
    err(f"deploy/Dockerfile: EXPOSE {expose} does not match API_ADDR")
if not re.search(r'^HEALTHCHECK .*CMD \["api", "healthcheck"\]', dockerfile, re.M):
    err("deploy/Dockerfile: HEALTHCHECK must run `api healthcheck`")
for env_name in re.findall(r"^ENV (.*(?:\\\n.*)*)", dockerfile, re.M):
    check_env("deploy/Dockerfile ENV", "api", re.findall(r"([A-Z][A-Z0-9_]*)=", env_name))

workflow = ROOT / ".github/workflows/ci.yml"
if workflow.exists() and rust_image:
    toolchains = set(re.findall(r"RUST_TOOLCHAIN:\s*\"?(\d+\.\d+)", workflow.read_text()))
    if toolchains != {rust_image}:
        err(f".github/workflows/ci.yml: RUST_TOOLCHAIN {sorted(toolchains)} differs from the image's Rust {rust_image}")

# ---------------------------------------------------------------- compose
compose = yaml.safe_load(read("docker-compose.yml"))
services = compose["services"]
for required in ("postgres", "redis", "mailpit", "migrate", "api", "worker", "prometheus", "grafana"):
    if required not in services:
        err(f"docker-compose.yml: no service {required}")
ours = {n: s for n, s in services.items() if s.get("image") == "task-shop:local" or "build" in s}
compose_ports: dict[str, int] = {}
for name, svc in ours.items():
    where = f"docker-compose.yml services.{name}"
    cmd = svc.get("command") or ["api", "serve"]
    binary = cmd[0]
    if binary not in ENV:
        err(f"{where}: command {cmd} runs no known binary")
        continue
    if binary == "api" and (len(cmd) < 2 or cmd[1] not in API_COMMANDS):
        err(f"{where}: `api {' '.join(cmd[1:])}` is not a subcommand ({sorted(API_COMMANDS)})")
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    check_env(where, binary, env)
    hc = (svc.get("healthcheck") or {})
    test = hc.get("test")
    grace = duration_s(svc.get("stop_grace_period", "10s"))
    if name == "api":
        port = port_of(env.get("API_ADDR"))
        compose_ports["api"] = port
        published = {int(str(p).split(":")[-1]) for p in svc.get("ports", [])}
        if port not in published:
            err(f"{where}: API_ADDR port {port} is not among the published ports {sorted(published)}")
        if test != ["CMD", "api", "healthcheck"]:
            err(f"{where}: the health check must be `api healthcheck` (GET /health/live)")
        if grace < delay_of(env) + API_SHUTDOWN:
            err(f"{where}: stop_grace_period {grace}s < SHUTDOWN_DELAY {delay_of(env)}s + shutdown {API_SHUTDOWN}s")
    if name == "worker":
        port = port_of(env.get("WORKER_METRICS_ADDR"))
        compose_ports["worker"] = port
        exposed = {int(p) for p in svc.get("expose", [])}
        if port not in exposed:
            err(f"{where}: WORKER_METRICS_ADDR port {port} is not exposed ({sorted(exposed)})")
        if not test or f"/dev/tcp/127.0.0.1/{port}" not in " ".join(test):
            err(f"{where}: the health check must probe the metrics port {port}")
        if grace < JOB_TIMEOUT:
            err(f"{where}: stop_grace_period {grace}s < the job timeout {JOB_TIMEOUT}s")
        if (svc.get("deploy") or {}).get("replicas", 1) < 2:
            err(f"{where}: expected 2 replicas")
        if "WORKER_NAME" in env:
            err(f"{where}: WORKER_NAME would give every replica the same name")
    for dep, cond in (svc.get("depends_on") or {}).items():
        if not isinstance(cond, dict) or "condition" not in cond:
            err(f"{where}: depends_on {dep} has no condition")
for name, svc in services.items():
    if name != "migrate" and not (svc.get("healthcheck") or {}).get("test"):
        err(f"docker-compose.yml services.{name}: no healthcheck")
    for vol in svc.get("volumes", []):
        src = str(vol).split(":")[0]
        if src.startswith("./") and not (ROOT / src).exists():
            err(f"docker-compose.yml services.{name}: {src} does not exist")

prom = yaml.safe_load(read("deploy/observability/prometheus.yml"))
for job in prom["scrape_configs"]:
    name = job["job_name"]
    ports = {sd["port"] for sd in job.get("dns_sd_configs", [])}
    if name in compose_ports and ports != {compose_ports[name]}:
        err(f"prometheus.yml job {name}: scrapes port {ports}, compose serves metrics on {compose_ports[name]}")
    if job.get("metrics_path", "/metrics") != "/metrics":
        err(f"prometheus.yml job {name}: metrics_path is not /metrics")


# ---------------------------------------------------------------- Kubernetes
def check_k8s(overlay: str, path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    cms, secrets = by_kind.get("ConfigMap", {}), by_kind.get("Secret", {})
    pods = []  # (owner kind/name, pod template)
    for kind in ("Deployment", "Job", "StatefulSet"):
        for name, obj in by_kind.get(kind, {}).items():
            pods.append((f"{kind}/{name}", obj["spec"]["template"]))
    api_found = worker_found = False
    for owner, tpl in pods:
        spec = tpl["spec"]
        for c in spec["containers"]:
            where = f"{overlay}: {owner} container {c['name']}"
            cmd = (c.get("command") or []) + (c.get("args") or [])
            if not cmd or cmd[0] not in ENV:
                if c.get("image", "").startswith("task-shop"):
                    err(f"{where}: no command naming api or worker")
                continue
            binary = cmd[0]
            env: dict[str, str | None] = {}
            for e in c.get("env", []):
                env[e["name"]] = e.get("value")
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    ref = src["configMapRef"]["name"]
                    if ref not in cms:
                        err(f"{where}: envFrom ConfigMap {ref} is not in the overlay")
                        continue
                    env.update(cms[ref].get("data", {}))
                if "secretRef" in src:
                    ref = src["secretRef"]["name"]
                    keys = set((secrets.get(ref) or {}).get("data", {})) | set((secrets.get(ref) or {}).get("stringData", {}))
                    env.update({k: None for k in keys})
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
                if ref and ref["name"] not in cms:
                    err(f"{where}: configMapKeyRef {ref['name']} is not in the overlay")
                sref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if sref:
                    # Generated in the overlay (dev), or created out of band from the template (prod).
                    if sref["key"] not in SECRET_KEYS:
                        err(f"{where}: Secret key {sref['key']} is not in base/secret.template.yaml")
                    gen = secrets.get(sref["name"])
                    if gen is None and sref["name"] != "task-shop":
                        err(f"{where}: Secret {sref['name']} is neither generated nor the out-of-band task-shop")
                    if gen is not None and not sref.get("optional") and sref["key"] not in (gen.get("data") or {}):
                        err(f"{where}: generated Secret {sref['name']} has no key {sref['key']}")
            check_env(where, binary, env)
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            grace = spec.get("terminationGracePeriodSeconds", 30)
            if binary == "api" and cmd[1:2] == ["serve"]:
                api_found = True
                if ports.get("http") != port_of(env.get("API_ADDR")):
                    err(f"{where}: port http {ports.get('http')} != API_ADDR {env.get('API_ADDR')}")
                if env.get("METRICS_ADDR") and ports.get("metrics") != port_of(env["METRICS_ADDR"]):
                    err(f"{where}: port metrics {ports.get('metrics')} != METRICS_ADDR {env['METRICS_ADDR']}")
                for probe, want in (("readinessProbe", "/health/ready"), ("livenessProbe", "/health/live"), ("startupProbe", None)):
                    get = (c.get(probe) or {}).get("httpGet")
                    if not get:
                        if want:
                            err(f"{where}: no HTTP {probe}")
                        continue
                    if get["path"] not in HEALTH_PATHS or (want and get["path"] != want):
                        err(f"{where}: {probe} path {get['path']} (want {want or sorted(HEALTH_PATHS)})")
                    if get["port"] not in ports and get["port"] not in ports.values():
                        err(f"{where}: {probe} port {get['port']} is not a container port")
                pre = ((c.get("lifecycle") or {}).get("preStop") or {})
                sleep = int((pre.get("sleep") or {}).get("seconds", 0))
                if "exec" in pre and pre["exec"]["command"][:1] == ["sleep"]:
                    sleep = int(pre["exec"]["command"][1])
                if grace < sleep + delay_of(env) + API_SHUTDOWN:
                    err(
                        f"{where}: terminationGracePeriodSeconds {grace} < preStop {sleep}s + "
                        f"SHUTDOWN_DELAY {delay_of(env)}s + shutdown {API_SHUTDOWN}s"
                    )
                if overlay == "prod":
                    if env.get("APP_ENV") != "production":
                        err(f"{where}: APP_ENV is {env.get('APP_ENV')!r}, not production")
                    if not env.get("TRUSTED_PROXIES"):
                        err(f"{where}: TRUSTED_PROXIES is not set (the ingress controller's range)")
            elif binary == "api":
                if cmd[1:2] and cmd[1] not in API_COMMANDS:
                    err(f"{where}: `api {cmd[1]}` is not a subcommand")
            if binary == "worker":
                worker_found = True
                mport = port_of(env.get("WORKER_METRICS_ADDR"))
                if ports.get("metrics") != mport:
                    err(f"{where}: port metrics {ports.get('metrics')} != WORKER_METRICS_ADDR {env.get('WORKER_METRICS_ADDR')}")
                if grace < JOB_TIMEOUT:
                    err(f"{where}: terminationGracePeriodSeconds {grace} < job timeout {JOB_TIMEOUT}s")
                if "WORKER_NAME" in env:
                    err(f"{where}: WORKER_NAME would give every replica the same name")
                if overlay == "prod" and env.get("APP_ENV") != "production":
                    err(f"{where}: APP_ENV is not production")
    if not api_found or not worker_found:
        err(f"{overlay}: an api serve and a worker Deployment are both required")

    def pods_selected(selector: dict) -> list[dict]:
        return [tpl for _, tpl in pods if selector and all(tpl["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())]

    def port_names(tpls: list[dict]) -> set:
        out = set()
        for t in tpls:
            for c in t["spec"]["containers"]:
                for p in c.get("ports", []):
                    out |= {p.get("name"), p["containerPort"]}
        return out

    for name, svc in by_kind.get("Service", {}).items():
        sel = pods_selected(svc["spec"].get("selector", {}))
        if not sel:
            err(f"{overlay}: Service {name} selects no pod")
        for p in svc["spec"]["ports"]:
            if p.get("targetPort", p["port"]) not in port_names(sel):
                err(f"{overlay}: Service {name} targetPort {p.get('targetPort')} is no port of its pods")
    for kind in ("HorizontalPodAutoscaler",):
        for name, hpa in by_kind.get(kind, {}).items():
            ref = hpa["spec"]["scaleTargetRef"]
            if ref["name"] not in by_kind.get(ref["kind"], {}):
                err(f"{overlay}: HPA {name} targets missing {ref['kind']}/{ref['name']}")
    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        if not pods_selected(pdb["spec"]["selector"].get("matchLabels", {})):
            err(f"{overlay}: PDB {name} selects no pod")
    for name, np in by_kind.get("NetworkPolicy", {}).items():
        sel = pods_selected(np["spec"]["podSelector"].get("matchLabels", {}))
        if not sel:
            err(f"{overlay}: NetworkPolicy {name} selects no pod")
        for rule in np["spec"].get("ingress", []):
            for p in rule.get("ports", []):
                if p["port"] not in port_names(sel):
                    err(f"{overlay}: NetworkPolicy {name} opens port {p['port']}, no port of its pods")
    ingresses = by_kind.get("Ingress", {})
    for name, ing in ingresses.items():
        for r in ing["spec"].get("rules", []):
            for p in r["http"]["paths"]:
                b = p["backend"]["service"]
                svc = by_kind.get("Service", {}).get(b["name"])
                if not svc:
                    err(f"{overlay}: Ingress {name} routes to missing Service {b['name']}")
                elif b["port"].get("name") not in {x.get("name") for x in svc["spec"]["ports"]} and b["port"].get("number") not in {x["port"] for x in svc["spec"]["ports"]}:
                    err(f"{overlay}: Ingress {name} routes to a port Service {b['name']} does not have")
    if overlay == "prod":
        if not ingresses:
            err("prod: no Ingress")
        for name, ing in ingresses.items():
            if not ing["spec"].get("tls"):
                err(f"prod: Ingress {name} has no TLS")
            ann = ing["metadata"].get("annotations", {})
            if not any(k.startswith("cert-manager.io/") for k in ann):
                err(f"prod: Ingress {name} has no cert-manager annotation")
    for name, s in secrets.items():
        if overlay == "prod" and any(v for v in (s.get("data") or {}).values()):
            err(f"prod: Secret {name} carries values; create it out of band (base/secret.template.yaml)")


SECRET_TEMPLATE = yaml.safe_load(read("deploy/k8s/base/secret.template.yaml"))
SECRET_KEYS = set(SECRET_TEMPLATE.get("stringData") or {})
if any(SECRET_TEMPLATE["stringData"].values()):
    err("deploy/k8s/base/secret.template.yaml must carry no values")
if "secret.template.yaml" in read("deploy/k8s/base/kustomization.yaml").split("resources:")[1].split("images:")[0]:
    err("secret.template.yaml must not be a kustomize resource (applying it would blank the real Secret)")

args = sys.argv[1:]
while args:
    if args[0] == "--k8s" and len(args) > 1:
        overlay, _, rendered = args[1].partition("=")
        check_k8s(overlay, Path(rendered))
        args = args[2:]
    else:
        sys.exit(f"usage: {sys.argv[0]} [--k8s OVERLAY=RENDERED.yaml ...]")

# ---------------------------------------------------------------- metric names in dashboards and rules
PROMQL_WORDS = {
    # aggregations, functions, keywords
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
    "rate", "irate", "increase", "delta", "idelta", "deriv", "predict_linear", "histogram_quantile", "absent",
    "absent_over_time", "abs", "ceil", "floor", "round", "clamp", "clamp_min", "clamp_max", "vector", "scalar",
    "time", "timestamp", "label_replace", "label_join", "sort", "sort_desc", "changes", "resets", "sqrt", "exp", "ln",
    "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time", "last_over_time",
    "quantile_over_time", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}


def metric_names(expr: str) -> set[str]:
    e = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)           # strings
    e = re.sub(r"\{[^}]*\}", "", e)                        # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                       # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\$\w+", "", e)                            # Grafana variables
    toks = re.findall(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)", e)
    return {t for t in toks if t.lower() not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]", t)}


used: dict[str, set[str]] = {}
dash_paths = sorted((ROOT / "deploy/observability/grafana/dashboards").glob("*.json"))
if not dash_paths:
    err("no dashboard in deploy/observability/grafana/dashboards")


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


for dp in dash_paths:
    dash = json.loads(dp.read_text())
    for p in walk_panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            for name in metric_names(t.get("expr", "")):
                used.setdefault(name, set()).add(f"{dp.name}: {p.get('title')}")
rules = yaml.safe_load(read("deploy/observability/alerts.yml"))
alert_names = []
for g in rules["groups"]:
    for r in g["rules"]:
        alert_names.append(r.get("alert"))
        for name in metric_names(r["expr"]):
            used.setdefault(name, set()).add(f"alerts.yml: {r.get('alert') or r.get('record')}")
for name, where in sorted(used.items()):
    if name not in exported:
        err(f"metric {name} is not exported by api or worker (used in {', '.join(sorted(where))})")
tests = yaml.safe_load(read("deploy/observability/alerts.test.yml"))
tested = {a["alertname"] for t in tests["tests"] for a in t.get("alert_rule_test", []) if a.get("exp_alerts")}
for a in alert_names:
    if a and a not in tested:
        err(f"alerts.test.yml: alert {a} has no unit test that expects it to fire")
base_names = {n for n in exported if n != "up" and not re.search(r"_(bucket|sum|count)$", n)} | {
    n[: -len("_bucket")] for n in exported if n.endswith("_bucket")
}
on_dashboard = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used if any(w.endswith(".json") or ".json:" in w for w in used[n])}
missing = sorted(base_names - on_dashboard - {n[: -len("_bucket")] for n in used if n.endswith("_bucket")})
if missing:
    notes.append(f"exported but on no dashboard panel: {', '.join(missing)}")

for n in notes:
    print(f"check-deploy: note: {n}")
if errors:
    for e in errors:
        print(f"check-deploy: error: {e}", file=sys.stderr)
    sys.exit(1)
print(
    f"check-deploy: ok — env of api ({len(ENV['api'])} names) and worker ({len(ENV['worker'])}), ports, health paths, "
    f"grace periods, {len(used)} metric names in {len(dash_paths)} dashboard(s) and {len(alert_names)} alerts"
)

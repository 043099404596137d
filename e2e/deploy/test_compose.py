"""docker-compose.cluster.yml, deploy/nginx.conf and deploy/otel-collector.yaml, checked without a
Docker engine: Docker Compose's own loader, the compose-spec schema, nginx -t, and the wiring
between the three files."""

import re
import shutil
import tempfile
from pathlib import Path

from conftest import ROOT, compose_binary, env_file, port_of, run, tool

NODES = ["confab-1", "confab-2", "confab-3"]


def test_docker_compose_loads_and_validates_the_file():
    res = run([compose_binary(), "-f", "docker-compose.cluster.yml", "--env-file", ".env.example", "config", "--quiet"], cwd=ROOT)
    assert res.returncode == 0, res.stderr


def test_secrets_are_required_from_the_env_file():
    res = run([compose_binary(), "-f", "docker-compose.cluster.yml", "--env-file", "/dev/null", "config", "--quiet"], cwd=ROOT)
    assert res.returncode != 0
    assert "required variable" in res.stderr and "is missing a value" in res.stderr, res.stderr


def test_the_file_is_valid_against_the_compose_spec_schema():
    res = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "docker-compose.cluster.yml"], cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_env_example_names_every_variable_the_file_requires(compose_raw):
    required = set(re.findall(r"\$\{([A-Z_]+):\?", compose_raw))
    assert {"CONFAB_JWT_SECRET", "CONFAB_API_KEY", "POSTGRES_PASSWORD"} <= required
    example = env_file(ROOT / ".env.example")
    for name in required:
        assert example.get(name), f".env.example has no value for {name}"
    for name in ("CONFAB_JWT_SECRET", "CONFAB_API_KEY"):
        assert len(example[name]) >= 16, f"{name} in .env.example is shorter than confab accepts"


def test_three_nodes_from_one_anchor_with_distinct_ids_and_shared_secrets(compose_model, compose_raw):
    assert "x-confab-node: &confab-node" in compose_raw
    assert compose_raw.count("<<: *confab-node") == 3
    services = compose_model["services"]
    envs = [services[n]["environment"] for n in NODES]
    assert [e["CONFAB_NODE_ID"] for e in envs] == NODES
    example = env_file(ROOT / ".env.example")
    for e in envs:
        assert e["CONFAB_JWT_SECRET"] == example["CONFAB_JWT_SECRET"]
        assert e["CONFAB_API_KEY"] == example["CONFAB_API_KEY"]
        assert e["CONFAB_REDIS_URL"] == "redis://redis:6379"
        assert e["CONFAB_DATABASE_URL"].startswith("postgres://confab:") and e["CONFAB_DATABASE_URL"].endswith("@postgres:5432/confab")
        assert e["CONFAB_LISTEN"] == "0.0.0.0:3000"


def test_nodes_wait_for_healthy_postgres_and_redis(compose_model):
    for n in NODES:
        deps = compose_model["services"][n]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["redis"]["condition"] == "service_healthy"
    nginx = compose_model["services"]["nginx"]["depends_on"]
    assert all(nginx[n]["condition"] == "service_healthy" for n in NODES)


def test_every_long_running_service_has_a_healthcheck_or_a_reason_not_to(compose_model):
    services = compose_model["services"]
    for name in ["postgres", "redis", "nginx", *NODES]:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    # The nodes ask /readyz with the binary itself: no shell or curl in the image.
    assert services["confab-1"]["healthcheck"]["test"] == ["CMD", "/usr/local/bin/confab", "healthcheck"]


def seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+)s", duration)
    assert m, f"unexpected duration {duration!r}"
    return float(m.group(1))


def test_stop_grace_period_exceeds_the_drain_deadline(compose_model):
    for n in NODES:
        svc = compose_model["services"][n]
        drain = float(svc["environment"]["CONFAB_SHUTDOWN_TIMEOUT"])
        assert seconds(svc["stop_grace_period"]) > drain + 2, f"{n}: grace {svc['stop_grace_period']} vs drain {drain}s"


def test_restart_policies_and_named_volumes(compose_model):
    for name, svc in compose_model["services"].items():
        assert svc.get("restart") == "unless-stopped", f"{name} has no restart policy"
    assert {"postgres-data", "redis-data"} <= set(compose_model["volumes"])
    pg_mounts = compose_model["services"]["postgres"]["volumes"]
    assert any(v["type"] == "volume" and v["source"] == "postgres-data" for v in pg_mounts)


def test_every_referenced_file_exists(compose_model):
    for name, svc in compose_model["services"].items():
        for v in svc.get("volumes", []):
            if v["type"] == "bind":
                assert Path(v["source"]).is_file(), f"{name} mounts {v['source']}, which does not exist"
        build = svc.get("build")
        if build:
            assert (Path(build["context"]) / build.get("dockerfile", "Dockerfile")).is_file()
    for f in ["Dockerfile", ".dockerignore", ".env.example", "deploy/nginx.conf", "deploy/otel-collector.yaml"]:
        assert (ROOT / f).is_file(), f


def test_nodes_are_locked_down(compose_model):
    for n in NODES:
        svc = compose_model["services"][n]
        assert svc["read_only"] is True
        assert svc["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in svc["security_opt"]


def test_only_nginx_publishes_the_chat_port(compose_model):
    services = compose_model["services"]
    assert [p["target"] for p in services["nginx"]["ports"]] == [8080]
    for n in NODES:
        assert not services[n].get("ports"), f"{n} should only be reached through nginx"


def nginx_conf() -> str:
    return (ROOT / "deploy" / "nginx.conf").read_text()


def test_nginx_proxies_to_every_node_with_sticky_sessions_and_upgrades(compose_model):
    conf = nginx_conf()
    upstream = re.search(r"upstream confab \{(.*?)\}", conf, re.S).group(1)
    servers = re.findall(r"^\s*server\s+(\S+)", upstream, re.M)
    ports = {port_of(compose_model["services"][n]["environment"]["CONFAB_LISTEN"]) for n in NODES}
    assert servers == [f"{n}:{p}" for n in NODES for p in ports]
    assert re.search(r"^\s*hash \$remote_addr consistent;", upstream, re.M)
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_set_header Connection $connection_upgrade;" in conf
    assert "proxy_http_version 1.1;" in conf
    assert re.search(r"listen 8080;", conf)


def test_nginx_accepts_the_config():
    """`nginx -t` on deploy/nginx.conf, with the compose service names resolvable (pointed at loopback)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(nginx).exists(), "nginx is required: apt-get install -y nginx"
    with tempfile.TemporaryDirectory() as d:
        conf = nginx_conf()
        for i, n in enumerate(NODES):
            conf = conf.replace(f"server {n}:3000", f"server 127.0.0.{i + 1}:3000")
        conf = conf.replace("/tmp/", f"{d}/")
        path = Path(d) / "nginx.conf"
        path.write_text(conf)
        res = run([nginx, "-t", "-q", "-c", str(path), "-p", d, "-e", f"{d}/error.log"])
        assert res.returncode == 0, res.stderr
        # And nginx does reject a broken file, so the check above means something.
        path.write_text(conf.replace("proxy_http_version 1.1;", "proxy_http_version;"))
        assert run([nginx, "-t", "-q", "-c", str(path), "-p", d, "-e", f"{d}/error.log"]).returncode != 0


# Components of otelcol-contrib that the collector config may use.
CONTRIB = {
    "receivers": {"otlp", "prometheus"},
    "processors": {"batch", "memory_limiter"},
    "exporters": {"otlp", "otlphttp", "prometheus", "debug"},
    "extensions": {"health_check"},
}


def test_collector_config_is_wired_end_to_end(collector_config, compose_model):
    cfg = collector_config
    for section, known in CONTRIB.items():
        for component in cfg[section]:
            assert component.split("/")[0] in known, f"{section}.{component} is not an otelcol-contrib component"
    used = {s: set() for s in ("receivers", "processors", "exporters")}
    for name, pipeline in cfg["service"]["pipelines"].items():
        assert name.split("/")[0] in {"traces", "metrics", "logs"}
        for s in used:
            for component in pipeline[s]:
                assert component in cfg[s], f"pipeline {name} uses undefined {s[:-1]} {component}"
                used[s].add(component)
    for s, names in used.items():
        assert names == set(cfg[s]), f"{s} defined but unused: {set(cfg[s]) - names}"
    assert set(cfg["service"]["extensions"]) <= set(cfg["extensions"])
    # Nodes export to the collector's OTLP/HTTP receiver...
    endpoint = compose_model["services"]["confab-1"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert endpoint == "http://otel-collector:4318"
    assert port_of(cfg["receivers"]["otlp"]["protocols"]["http"]["endpoint"]) == 4318
    assert "otel-collector" in compose_model["services"]
    # ...which sends traces to a service that exists, and scrapes every node.
    jaeger_host = cfg["exporters"]["otlp/jaeger"]["endpoint"].split(":")[0]
    assert jaeger_host in compose_model["services"]
    targets = cfg["receivers"]["prometheus"]["config"]["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"{n}:3000" for n in NODES]
    mount = compose_model["services"]["otel-collector"]["volumes"][0]
    assert mount["source"].endswith("deploy/otel-collector.yaml")
    assert f"--config={mount['target']}" in compose_model["services"]["otel-collector"]["command"]


def test_nginx_proxies_the_way_the_local_cluster_template_does():
    """deploy/nginx.conf is cluster/nginx.conf.template for containers: the proxying must not drift."""

    def proxying(text):
        location = re.search(r"location / \{(.*?)\}", text, re.S).group(1)
        return {line.strip() for line in location.splitlines() if line.strip().startswith("proxy_")}

    template = (ROOT / "cluster" / "nginx.conf.template").read_text()
    assert proxying(template) <= proxying(nginx_conf()), proxying(template) - proxying(nginx_conf())
    assert re.search(r"hash \$remote_addr consistent;", template)

"""helm/confab: lint, render with the default values and with every optional feature on, validate
every manifest against the Kubernetes 1.30 schemas in strict mode, and assert what an SRE relies
on (probes, drain, secrets, labels, schema)."""

import copy
import re

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from conftest import ROOT

CHART = ROOT / "helm" / "confab"
K8S = "1.30.0"

ALL_ON = {
    "replicaCount": 3,
    "image": {"repository": "registry.example.com/confab", "tag": "0.1.0", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "registry"}],
    "config": {"shutdownTimeout": 20, "maxConnections": 1000000, "logFormat": "json"},
    "secrets": {
        "jwtSecret": "a-jwt-secret-of-enough-bytes",
        "apiKey": "an-api-key-of-enough-bytes",
        "databaseUrl": "postgres://confab:pw@postgres:5432/confab",
        "redisUrl": "redis://redis:6379",
    },
    "otel": {"endpoint": "http://otel-collector.observability:4318"},
    "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
    "service": {"sessionAffinity": "ClientIP", "annotations": {"a": "b"}},
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
        "hosts": [{"host": "chat.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
        "tls": [{"secretName": "chat-tls", "hosts": ["chat.example.com"]}],
    },
    "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12, "targetMemoryUtilizationPercentage": 80},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "serviceAccount": {"annotations": {"iam": "role"}},
    "podAnnotations": {"x": "y"},
    "podLabels": {"team": "chat"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "chat", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "preference": {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["chat"]}]}}]}},
    "priorityClassName": "high",
}


def render(values=None):
    """Every rendered object, as dicts, keyed by (kind, name); NOTES.txt under ("NOTES", "")."""
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values=values, name="chat", namespace="chat", is_install=True)
    objects = {}
    for path, text in files.items():
        if path.endswith("NOTES.txt"):
            objects[("NOTES", "")] = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in objects, f"{key} rendered twice"
                objects[key] = doc
    return objects


def kinds(objects):
    return sorted(k for k, _ in objects if k != "NOTES")


def deployment(objects):
    return objects[("Deployment", "chat-confab")]


def container(objects):
    return deployment(objects)["spec"]["template"]["spec"]["containers"][0]


def env_of(objects):
    return {e["name"]: e for e in container(objects)["env"]}


def config_env(objects):
    return objects[("ConfigMap", "chat-confab")]["data"]


@pytest.fixture(scope="module")
def defaults():
    return render()


@pytest.fixture(scope="module")
def all_on():
    return render(ALL_ON)


def test_lint_is_clean_in_strict_mode():
    for values in (None, ALL_ON):
        report = helm.lint(CHART, values, strict=True, kube_version="v1.30.0")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not report["errors"] and not problems, report


def validate(objects):
    for (kind, name), obj in objects.items():
        if kind in ("NOTES", "ServiceMonitor"):
            continue
        kubernetes_validate.validate(obj, K8S, strict=True)


def test_default_render_is_valid_kubernetes_1_30(defaults):
    assert kinds(defaults) == ["ConfigMap", "Deployment", "Pod", "PodDisruptionBudget", "Secret", "Service", "ServiceAccount"]
    validate(defaults)


def test_every_optional_feature_renders_valid_kubernetes_1_30(all_on):
    assert kinds(all_on) == sorted(
        ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Ingress", "Pod", "PodDisruptionBudget", "Secret", "Service", "ServiceAccount", "ServiceMonitor"]
    )
    validate(all_on)


def test_the_validator_rejects_what_it_should(defaults):
    """Strict validation catches a misplaced field, so the passes above mean something."""
    broken = copy.deepcopy(deployment(defaults))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz", "port": "http"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S, strict=True)


def server_defaults():
    """Every `CONFAB_*` variable of the server with a default, from src/config.rs: {name: value}."""
    source = (ROOT / "src" / "config.rs").read_text()
    found = re.findall(r'env = "(CONFAB_[A-Z_]+)",\s*(?:value_enum,\s*)?default_value(?:_t)? = "?([^")\]]+)"?', source)
    assert len(found) > 20, "the server's settings were not found in src/config.rs"
    return {name: value.replace("_", "") if value.replace("_", "").isdigit() else value for name, value in found}


# Where the chart deliberately differs from a server started by hand.
CHART_OWN_DEFAULTS = {
    "CONFAB_LISTEN",  # every interface, on the container port
    "CONFAB_LOG_FORMAT",  # json for log collectors
    "CONFAB_NODE_TIMEOUT",  # pods are rescheduled, not restarted in place: fewer false deaths
}


def test_the_chart_sets_only_known_settings_and_keeps_the_server_defaults(defaults):
    known = server_defaults()
    env = config_env(defaults)
    unknown = [k for k in env if k.startswith("CONFAB_") and k not in known and k != "CONFAB_DEV_TOKENS"]
    assert not unknown, f"the server has no such settings: {unknown}"
    differing = {
        k: (v, known[k]) for k, v in env.items() if k in known and k not in CHART_OWN_DEFAULTS and v != known[k]
    }
    assert not differing, f"chart default vs server default: {differing}"
    for tuned in ("CONFAB_WRITE_CONCURRENCY", "CONFAB_MAX_PENDING_ADMISSIONS", "CONFAB_ADMISSION_WAIT_MS"):
        assert tuned in env, f"{tuned} cannot be set from values.yaml"


def test_probes_ask_the_real_endpoints_on_the_listening_port(defaults):
    c = container(defaults)
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["http"]
    assert config_env(defaults)["CONFAB_LISTEN"] == f"0.0.0.0:{port}"


@pytest.mark.parametrize("values", [None, ALL_ON, {"config": {"shutdownTimeout": 45}, "preStopSleepSeconds": 15}])
def test_grace_period_covers_the_pre_stop_delay_and_the_drain(values):
    objects = render(values)
    pod = deployment(objects)["spec"]["template"]["spec"]
    drain = int(config_env(objects)["CONFAB_SHUTDOWN_TIMEOUT"])
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop > 0
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain


def test_a_grace_period_shorter_than_the_drain_is_refused():
    with pytest.raises(helm.HelmError, match="terminationGracePeriodSeconds"):
        render({"terminationGracePeriodSeconds": 12})
    assert deployment(render({"terminationGracePeriodSeconds": 60}))["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 60


def test_rolling_updates_never_drop_capacity(defaults):
    assert deployment(defaults)["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_node_id_is_the_pod_name(defaults):
    assert env_of(defaults)["CONFAB_NODE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_secrets_come_from_the_secret_and_never_from_the_configmap(all_on):
    env = env_of(all_on)
    secret = all_on[("Secret", "chat-confab")]
    for var, key in [("CONFAB_JWT_SECRET", "jwt-secret"), ("CONFAB_API_KEY", "api-key"), ("CONFAB_DATABASE_URL", "database-url"), ("CONFAB_REDIS_URL", "redis-url")]:
        assert env[var]["valueFrom"]["secretKeyRef"]["name"] == "chat-confab"
        assert env[var]["valueFrom"]["secretKeyRef"]["key"] == key
        assert key in secret["data"]
    data = " ".join(config_env(all_on).values())
    for value in ALL_ON["secrets"].values():
        assert value not in data


def test_an_existing_secret_is_used_instead_of_a_new_one():
    objects = render({"replicaCount": 2, "secrets": {"existingSecret": "confab-prod"}})
    assert "Secret" not in kinds(objects)
    env = env_of(objects)
    for var in ("CONFAB_JWT_SECRET", "CONFAB_API_KEY", "CONFAB_DATABASE_URL", "CONFAB_REDIS_URL"):
        assert env[var]["valueFrom"]["secretKeyRef"]["name"] == "confab-prod"
    assert "checksum/secret" not in deployment(objects)["spec"]["template"]["metadata"]["annotations"]
    validate(objects)


def test_config_checksum_rolls_the_pods_when_settings_change(defaults):
    a = deployment(defaults)["spec"]["template"]["metadata"]["annotations"]
    b = deployment(render({"config": {"maxConnections": 5000}}))["spec"]["template"]["metadata"]["annotations"]
    assert a["checksum/config"] != b["checksum/config"]
    assert "checksum/secret" in a
    same = deployment(render())["spec"]["template"]["metadata"]["annotations"]
    assert same["checksum/config"] == a["checksum/config"]


def test_security_contexts(defaults):
    pod = deployment(defaults)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    sc = container(defaults)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    # The read-only root filesystem leaves the working directory writable for SQLite.
    assert {"name": "data", "mountPath": "/data"} in container(defaults)["volumeMounts"]


def test_standard_labels_and_selectors_agree(all_on):
    for (kind, name), obj in all_on.items():
        if kind == "NOTES":
            continue
        labels = obj["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart"):
            assert key in labels, f"{kind}/{name} has no {key}"
    pod_labels = deployment(all_on)["spec"]["template"]["metadata"]["labels"]
    selector = deployment(all_on)["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert all_on[("Service", "chat-confab")]["spec"]["selector"] == selector
    assert all_on[("PodDisruptionBudget", "chat-confab")]["spec"]["selector"]["matchLabels"] == selector
    sm = all_on[("ServiceMonitor", "chat-confab")]
    assert sm["spec"]["selector"]["matchLabels"].items() <= all_on[("Service", "chat-confab")]["metadata"]["labels"].items()
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}]
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    for c in deployment(all_on)["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert c["labelSelector"]["matchLabels"] == selector


def test_ingress_keeps_websockets_open_and_polling_sticky(all_on):
    ing = all_on[("Ingress", "chat-confab")]
    ann = ing["metadata"]["annotations"]
    assert ann["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert int(ann["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(ann["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    assert ann["cert-manager.io/cluster-issuer"] == "letsencrypt"
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "chat-confab", "port": {"name": "http"}}
    assert ing["spec"]["tls"] == [{"hosts": ["chat.example.com"], "secretName": "chat-tls"}]


def test_autoscaler_scales_down_slowly_and_owns_the_replica_count(all_on):
    hpa = all_on[("HorizontalPodAutoscaler", "chat-confab")]
    down = hpa["spec"]["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= 60
    assert down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]
    assert "replicas" not in deployment(all_on)["spec"]
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}


def test_large_numbers_are_not_written_in_exponent_form(all_on):
    assert config_env(all_on)["CONFAB_MAX_CONNECTIONS"] == "1000000"


def test_helm_test_hook_asks_readyz_through_the_service(defaults):
    pod = defaults[("Pod", "chat-confab-test-readyz")]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    c = pod["spec"]["containers"][0]
    assert c["image"] == container(defaults)["image"]
    assert c["args"] == ["healthcheck", "chat-confab:3000"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize(
    "values, complaint",
    [
        ({"replicaCont": 3}, "replicaCont"),
        ({"config": {"shutdownTimout": 10}}, "shutdownTimout"),
        ({"ingress": {"enabled": True, "hostz": []}}, "hostz"),
        ({"replicaCount": "three"}, "replicaCount"),
        ({"config": {"logFormat": "xml"}}, "logFormat"),
        ({"secrets": {"jwtSecret": "short"}}, "jwtSecret"),
        ({"secrets": {"redisUrl": "http://redis:6379"}}, "redisUrl"),
    ],
)
def test_schema_rejects_unknown_keys_and_bad_values(values, complaint):
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError, match=complaint):
            chart.validate_schema(values)
    with pytest.raises(helm.HelmError):
        render(values)


def test_defaults_and_all_on_values_pass_the_schema():
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(None)
        chart.validate_schema(ALL_ON)


def test_several_pods_without_shared_storage_are_refused():
    with pytest.raises(helm.HelmError, match="postgres"):
        render({"replicaCount": 3})
    with pytest.raises(helm.HelmError, match="redisUrl"):
        render({"autoscaling": {"enabled": True}, "secrets": {"databaseUrl": "postgres://x@y/z"}})


def test_notes_tell_how_to_reach_and_check_the_release(defaults, all_on):
    assert "port-forward svc/chat-confab" in defaults[("NOTES", "")]
    assert "helm test chat" in defaults[("NOTES", "")]
    assert "WARNING: no secrets.databaseUrl" in defaults[("NOTES", "")]
    assert "https://chat.example.com/" in all_on[("NOTES", "")]
    assert "WARNING" not in all_on[("NOTES", "")]

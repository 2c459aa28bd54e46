"""``deploy/kubernetes``: what ``kubectl apply -k`` would apply, checked offline against the
Kubernetes schemas (kubernetes-validate) and against what the service itself needs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from sanic import Sanic

from service.factory import create_app
from service.settings import Settings, load_settings
from tests.support import REPO

DEPLOY = REPO / "deploy" / "kubernetes"
MEBI = 1024 * 1024


def _resources() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    documents = []
    for name in kustomization["resources"]:
        documents += [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]
    return documents


def _find(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in _resources() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def test_every_file_of_the_kustomization_is_listed_and_valid() -> None:
    listed = set(yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in _resources())
    assert kinds == [
        ("ConfigMap", "sanic-lb-config"),
        ("Deployment", "sanic-lb"),
        ("Deployment", "sanic-lb-redis"),
        ("Service", "local-api-gateway-headless"),
        ("Service", "local-auth-headless"),
        ("Service", "local-blog-headless"),
        ("Service", "local-dashboard-ui-headless"),
        ("Service", "local-user-headless"),
        ("Service", "sanic-lb"),
        ("Service", "sanic-lb-redis"),
    ]
    version = kubernetes_validate.latest_version()
    for document in _resources():
        # strict: an unknown (misspelt) field is an error, not silently ignored
        kubernetes_validate.validate(document, version, strict=True)


def test_a_misspelt_field_would_be_caught() -> None:
    deployment = _find("Deployment", "sanic-lb")
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 30
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def _mebibytes(quantity: str) -> float:
    units = {"Ki": 1024, "Mi": MEBI, "Gi": 1024 * MEBI}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity.removesuffix(suffix)) * factor / MEBI
    return float(quantity) / MEBI


def test_the_load_balancer_deployment() -> None:
    deployment = _find("Deployment", "sanic-lb")
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    assert deployment["spec"]["replicas"] == 2
    assert container["livenessProbe"]["httpGet"]["path"] == "/lb-health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/lb-health?ready=1"
    assert _mebibytes(container["resources"]["limits"]["memory"]) <= 256
    # longer than the preStop pause plus the service's own graceful shutdown
    Sanic._app_registry.clear()
    drain = create_app(load_settings(env={})).config.GRACEFUL_SHUTDOWN_TIMEOUT
    pause = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > drain + pause
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert _find("Service", "sanic-lb")["spec"]["selector"] == selector


def test_the_configuration_and_the_redis_url_are_what_the_service_accepts(
    tmp_path: Path,
) -> None:
    deployment = _find("Deployment", "sanic-lb")
    env = _env(_container(deployment))
    config = _find("ConfigMap", "sanic-lb-config")
    mount = next(m for m in _container(deployment)["volumeMounts"] if m["name"] == "config")
    (file_name,) = config["data"]
    assert env["LB_CONFIG"] == f"{mount['mountPath']}/{file_name}"
    (tmp_path / file_name).write_text(config["data"][file_name])
    settings = load_settings(env={**env, "LB_CONFIG": str(tmp_path / file_name)})
    assert settings.cluster.redis_url == env["LB_CLUSTER_REDIS_URL"]
    assert {u.stats_key for u in settings.upstreams} == {
        "api-gateway", "blog_service", "auth", "user_service", None,
    }  # fmt: skip
    # the URL names the Redis Service of this kustomization, on its port
    redis_service = _find("Service", "sanic-lb-redis")
    host_port = f"{redis_service['metadata']['name']}:{redis_service['spec']['ports'][0]['port']}"
    assert f"//{host_port}/" in settings.cluster.redis_url
    redis = _find("Deployment", "sanic-lb-redis")
    assert redis_service["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]
    assert _container(redis)["securityContext"]["readOnlyRootFilesystem"] is True


def _configured(tmp_path: Path, toml: str | None = None) -> Settings:
    """The ConfigMap's TOML (or ``toml``) loaded as the Deployment's environment loads it."""
    env = _env(_container(_find("Deployment", "sanic-lb")))
    config = _find("ConfigMap", "sanic-lb-config")
    (file_name,) = config["data"]
    (tmp_path / file_name).write_text(toml if toml is not None else config["data"][file_name])
    return load_settings(env={**env, "LB_CONFIG": str(tmp_path / file_name)})


def test_every_upstream_resolves_the_pods_of_a_headless_service(tmp_path: Path) -> None:
    settings = _configured(tmp_path)
    for upstream in settings.upstreams:
        (entry,) = upstream.targets
        assert entry.resolve, upstream.name
        service = _find("Service", entry.host)
        assert service["spec"]["clusterIP"] == "None"  # DNS answers with every ready pod
        assert not service["spec"].get("publishNotReadyAddresses", False)
        (port,) = service["spec"]["ports"]
        assert f":{port['port']}" in entry.url
        assert service["spec"]["selector"]["app.kubernetes.io/name"] == upstream.name
    assert settings.resolver.max_targets <= 32  # the shared block stays small


def test_the_commented_clusterip_alternative_loads_too(tmp_path: Path) -> None:
    toml = _find("ConfigMap", "sanic-lb-config")["data"]["lb.toml"]
    swapped, count = re.subn(r'url = "[^"]+;resolve"\n(\s*)# (url = "[^"]+")', r"\2", toml)
    assert count == 5
    settings = _configured(tmp_path, swapped)
    assert not any(t.resolve for u in settings.upstreams for t in u.targets)
    assert {u.url for u in settings.upstreams} == {
        "http://local-api-gateway-service:8000", "http://local-dashboard-ui-service:80",
        "http://local-blog-service:8005", "http://local-auth-service:8002",
        "http://local-user-service:8001",
    }  # fmt: skip


def test_the_tls_lines_uncommented_make_a_valid_deployment_the_service_accepts() -> None:
    """The optional HTTPS of load-balancer.yaml (lines marked ``#TLS``), uncommented as its
    header says, and the cert-manager Certificate of that header."""
    text = (DEPLOY / "load-balancer.yaml").read_text()
    uncommented = re.sub(r"^(\s*)#TLS ", r"\1", text, flags=re.MULTILINE)
    assert not re.search(r"^\s*#TLS", uncommented, flags=re.MULTILINE)
    (deployment,) = [d for d in yaml.safe_load_all(uncommented) if d]
    kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
    assert mount["readOnly"] is True and "subPath" not in mount  # subPath mounts never update
    env = _env(container)
    assert env["LB_TLS_CERT"] == f"{mount['mountPath']}/tls.crt"
    assert env["LB_TLS_KEY"] == f"{mount['mountPath']}/tls.key"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    settings = load_settings(env={k: v for k, v in env.items() if k != "LB_CONFIG"})
    assert settings.tls.enabled and settings.tls.http_redirect_port == ports["http-redirect"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "tls"]
    lines = text.splitlines()
    start = lines.index("#   apiVersion: cert-manager.io/v1")
    block = []
    for line in lines[start:]:
        if not line.startswith("#   "):
            break
        block.append(line.removeprefix("#   "))
    certificate = yaml.safe_load("\n".join(block))
    assert certificate["kind"] == "Certificate"
    assert certificate["spec"]["secretName"] == volume["secret"]["secretName"]


def test_the_proxy_lines_uncommented_make_an_nlb_service_and_a_deployment_requiring_it() -> None:
    """The optional PROXY protocol of service.yaml and load-balancer.yaml (lines marked
    ``#PROXY``), uncommented as service.yaml's header says: a LoadBalancer Service with the
    AWS annotation that turns it on, and the settings that require it from the NLB."""
    documents = []
    for name in ("service.yaml", "load-balancer.yaml"):
        text = (DEPLOY / name).read_text()
        uncommented = re.sub(r"^(\s*)#PROXY ", r"\1", text, flags=re.MULTILINE)
        assert not re.search(r"^\s*#PROXY", uncommented, flags=re.MULTILINE)
        (document,) = [d for d in yaml.safe_load_all(uncommented) if d]
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)
        documents.append(document)
    service, deployment = documents
    assert service["spec"]["type"] == "LoadBalancer"
    annotations = service["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"] == "*"
    env = _env(_container(deployment))
    settings = load_settings(env={k: v for k, v in env.items() if k != "LB_CONFIG"})
    assert settings.frontdoor.proxy_protocol and settings.admission.trusted_proxies


def test_an_edit_of_the_configmap_is_reloaded_without_a_restart(tmp_path: Path) -> None:
    """LB_CONFIG_WATCH on, and the ConfigMap mounted as a directory: a ``subPath`` mount
    would never see an update (the kubelet swaps the directory's ``..data`` link)."""
    deployment = _find("Deployment", "sanic-lb")
    container = _container(deployment)
    env = _env(container)
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert "subPath" not in mount
    config = _find("ConfigMap", "sanic-lb-config")
    (file_name,) = config["data"]
    (tmp_path / file_name).write_text(config["data"][file_name])
    settings = load_settings(env={**env, "LB_CONFIG": str(tmp_path / file_name)})
    assert settings.config_watch is True

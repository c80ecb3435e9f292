#!/usr/bin/env python3
"""make deploy-check: render the kustomizations, validate every Kubernetes object against the
Kubernetes schemas (kubernetes-validate, strict), validate the ECS task definitions against
deploy/ecs/task-definition.schema.json, and assert procflow's security invariants.

`kustomize` itself cannot be installed here (no binary downloads), so the small renderer below
implements exactly what these kustomizations use: resources, components, namespace, and
strategic-merge patches selected by kind + label selector (lists of named items merge by name).
"""
import copy
import json
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent
K8S_VERSION = "1.33.0"
failures = []


def fail(where, message):
    failures.append(f"{where}: {message}")


def load_yaml_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def merge(base, patch):
    """Strategic merge for the shapes we patch: dicts recurse, lists of named dicts merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i for i in base + patch):
        out = [copy.deepcopy(i) for i in base]
        for item in patch:
            match = next((i for i, b in enumerate(out) if b["name"] == item["name"]), None)
            if match is None:
                out.append(copy.deepcopy(item))
            else:
                out[match] = merge(out[match], item)
        return out
    return copy.deepcopy(patch)


def selects(target, obj):
    if target.get("kind") and target["kind"] != obj.get("kind"):
        return False
    selector = target.get("labelSelector")
    if selector:
        labels = obj.get("metadata", {}).get("labels", {})
        for term in selector.split(","):
            key, _, value = term.partition("=")
            if labels.get(key.strip()) != value.strip():
                return False
    return True


def render(directory):
    directory = Path(directory)
    kustomization = load_yaml_docs(directory / "kustomization.yaml")[0]
    objects = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        objects.extend(render(path) if path.is_dir() else load_yaml_docs(path))
    patches = []
    for component in kustomization.get("components", []):
        comp_dir = directory / component
        comp = load_yaml_docs(comp_dir / "kustomization.yaml")[0]
        if comp.get("kind") != "Component":
            fail(comp_dir, "a component's kustomization must have kind: Component")
        patches.extend((comp_dir, p) for p in comp.get("patches", []))
    patches.extend((directory, p) for p in kustomization.get("patches", []))
    for base, patch in patches:
        body = load_yaml_docs(base / patch["path"])[0]
        hits = 0
        for i, obj in enumerate(objects):
            if selects(patch.get("target", {}), obj):
                patched = merge(obj, {k: v for k, v in body.items() if k not in ("apiVersion", "kind", "metadata")})
                objects[i] = patched
                hits += 1
        if hits == 0:
            fail(base / patch["path"], "patch selects no object")
    namespace = kustomization.get("namespace")
    if namespace:
        for obj in objects:
            if obj.get("kind") != "Namespace":
                obj.setdefault("metadata", {})["namespace"] = namespace
    return objects


# Custom resources the Kubernetes schemas do not know: the fields procflow relies on.
CUSTOM_KINDS = {
    ("cert-manager.io/v1", "Issuer"): lambda spec: any(k in spec for k in ("selfSigned", "ca", "acme", "vault")),
    ("cert-manager.io/v1", "Certificate"): lambda spec: spec.get("secretName") and spec.get("issuerRef", {}).get("name")
    and (spec.get("isCA") or spec.get("dnsNames")),
}


def validate_k8s(where, objects):
    for obj in objects:
        name = f"{where} {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        custom = CUSTOM_KINDS.get((obj.get("apiVersion"), obj.get("kind")))
        if custom is not None:
            if not obj.get("metadata", {}).get("name") or not custom(obj.get("spec", {})):
                fail(name, "missing the fields procflow relies on")
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(name, f"{e.message} at {'/'.join(str(p) for p in e.path)}")
        except Exception as e:  # unknown kinds, schema load errors
            fail(name, str(e))


def check_sidecar(where, objects):
    deployments = [o for o in objects if o["kind"] == "Deployment" and o["metadata"].get("labels", {}).get("procflow.io/sidecar") == "true"]
    if not deployments:
        fail(where, "no Deployment carries the sidecar label")
    for d in deployments:
        spec = d["spec"]["template"]["spec"]
        name = f"{where} Deployment/{d['metadata']['name']}"
        if spec.get("shareProcessNamespace") is not True:
            fail(name, "shareProcessNamespace must be true")
        collector = next((c for c in spec["containers"] if c["name"] == "procflow-collector"), None)
        if collector is None:
            fail(name, "no procflow-collector container")
            continue
        sc = collector.get("securityContext", {})
        if sc.get("privileged"):
            fail(name, "collector must not be privileged")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
            fail(name, "collector must drop ALL capabilities and add none")
        if sc.get("runAsNonRoot") is not True or sc.get("readOnlyRootFilesystem") is not True or sc.get("allowPrivilegeEscalation") is not False:
            fail(name, "collector must be runAsNonRoot, readOnlyRootFilesystem, no privilege escalation")
        env = {e["name"] for e in collector.get("env", [])}
        missing = {"POD_NAME", "POD_NAMESPACE", "POD_UID", "POD_IP", "NODE_NAME"} - env
        if missing:
            fail(name, f"downward-API env missing: {sorted(missing)}")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        if "emptyDir" not in volumes.get("procflow-spool", {}):
            fail(name, "spool must be an emptyDir volume")
        for probe in ("livenessProbe", "readinessProbe"):
            if probe not in collector:
                fail(name, f"collector has no {probe}")
        check_collector_credentials(name, collector, volumes)


def flag(args, name):
    """The value of `--name=value` in a container's args, or None."""
    prefix = f"--{name}="
    return next((a[len(prefix):] for a in args if a.startswith(prefix)), None)


def check_collector_credentials(name, collector, volumes):
    """The collector's identity is a short-lived projected token the app cannot reach; the
    aggregator is reached over TLS and verified."""
    args = collector.get("args", [])
    if not (flag(args, "aggregator") or "").startswith("https://"):
        fail(name, "the collector must reach the aggregator over https://")
    if not flag(args, "tls-ca"):
        fail(name, "the collector must verify the aggregator (--tls-ca)")
    if any(e["name"] in ("PROCFLOW_TOKEN", "PROCFLOW_TOKEN_FILE") or "secretKeyRef" in e.get("valueFrom", {}) for e in collector.get("env", [])):
        fail(name, "no credential in the collector's environment")
    token = flag(args, "token-file")
    mount = next((m for m in collector.get("volumeMounts", []) if token and token.startswith(m["mountPath"].rstrip("/") + "/")), None)
    sources = volumes.get(mount["name"], {}).get("projected", {}).get("sources", []) if mount else []
    sa = next((src["serviceAccountToken"] for src in sources if "serviceAccountToken" in src), None)
    if sa is None:
        fail(name, "--token-file must be a projected service-account token")
    elif sa.get("audience") != "procflow" or not 600 <= sa.get("expirationSeconds", 3600) <= 3600:
        fail(name, "the projected token needs audience procflow and a short expiry (600-3600 s)")


def check_aggregator(where, objects):
    config = next((o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "procflow-aggregator"), None)
    if config is None:
        fail(where, "no procflow-aggregator ConfigMap")
        return
    import tomllib
    toml = tomllib.loads(config["data"]["aggregator.toml"])
    for key in ("tls-cert", "tls-key", "readers"):
        if key not in toml:
            fail(where, f"the aggregator config needs {key}")
    if "sa-token-issuer" not in toml and "spiffe-trust-domain" not in toml:
        fail(where, "the aggregator needs per-identity writers (sa-token-issuer or spiffe-trust-domain)")
    if "token-file" in toml or "token" in toml:
        fail(where, "the shared token is for loopback only")
    certificates = {o["spec"]["secretName"] for o in objects if o["kind"] == "Certificate"}
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    secrets = {v["secret"]["secretName"] for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v}
    if not secrets & certificates:
        fail(where, "the aggregator's TLS secret must come from a cert-manager Certificate")


def check_ecs():
    schema = json.loads((ROOT / "ecs/task-definition.schema.json").read_text())
    for path in ["ecs/task-definition.json", "ecs/task-definition-ptrace.json"]:
        task = json.loads((ROOT / path).read_text())
        try:
            jsonschema.validate(task, schema)
        except jsonschema.ValidationError as e:
            fail(path, f"{e.message} at {'/'.join(str(p) for p in e.path)}")
            continue
        if task.get("pidMode") != "task":
            fail(path, "pidMode must be task (the collector must see the app's processes)")
        if task.get("networkMode") != "awsvpc" or "FARGATE" not in task.get("requiresCompatibilities", []):
            fail(path, "must be an awsvpc Fargate task")
        collector = next((c for c in task["containerDefinitions"] if c["name"] == "procflow-collector"), None)
        if collector is None or collector.get("essential") is not False:
            fail(path, "the collector must be a non-essential container (never takes the app down)")
        elif collector.get("privileged"):
            fail(path, "the collector must not be privileged")
        else:
            command = collector.get("command", [])
            if not (flag(command, "aggregator") or "").startswith("https://") or not flag(command, "tls-ca"):
                fail(path, "the collector must reach and verify the aggregator over TLS")
            if not (flag(command, "tls-cert") and flag(command, "tls-key")):
                fail(path, "the collector needs its workload certificate (SPIFFE ID) for mTLS")
            if collector.get("secrets") or any(e["name"].startswith("PROCFLOW_TOKEN") for e in collector.get("environment", [])):
                fail(path, "no credential in the collector's environment")
    service = json.loads((ROOT / "ecs/aggregator-service.json").read_text())
    try:
        jsonschema.validate(service["taskDefinition"], schema)
    except jsonschema.ValidationError as e:
        fail("ecs/aggregator-service.json", f"{e.message} at {'/'.join(str(p) for p in e.path)}")
    if service.get("service", {}).get("launchType") != "FARGATE":
        fail("ecs/aggregator-service.json", "service must run on FARGATE")
    aggregator = next(c for c in service["taskDefinition"]["containerDefinitions"] if c["name"] == "aggregator")
    command = aggregator.get("command", [])
    for needed in ("tls-cert", "tls-key", "tls-client-ca", "spiffe-trust-domain", "readers"):
        if not flag(command, needed):
            fail("ecs/aggregator-service.json", f"the aggregator needs --{needed}")
    if aggregator.get("secrets") or flag(command, "token-file"):
        fail("ecs/aggregator-service.json", "the shared token is for loopback only")


def check_postgres(where, objects):
    """Several replicas on a shared PostgreSQL: no volume, rolling updates, a disruption
    budget, the database URL and password from a Secret (never a password in the URL)."""
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    spec = deployment["spec"]
    if spec.get("replicas", 1) < 2:
        fail(where, "the PostgreSQL aggregator runs at least two replicas")
    if spec.get("strategy", {}).get("type") != "RollingUpdate":
        fail(where, "replicas on a shared database roll (no Recreate outage)")
    if any(o["kind"] == "PersistentVolumeClaim" for o in objects) or any(
        "persistentVolumeClaim" in v for v in spec["template"]["spec"]["volumes"]
    ):
        fail(where, "no persistent volume (SQLite's WAL does not work on EFS/NFS)")
    labels = spec["selector"]["matchLabels"]
    if not any(o["kind"] == "PodDisruptionBudget" and o["spec"]["selector"]["matchLabels"] == labels for o in objects):
        fail(where, "no PodDisruptionBudget selects the aggregator")
    container = next(c for c in spec["template"]["spec"]["containers"] if c["name"] == "aggregator")
    env = {e["name"]: e for e in container.get("env", [])}
    if "secretKeyRef" not in env.get("PROCFLOW_STORE", {}).get("valueFrom", {}):
        fail(where, "PROCFLOW_STORE must come from a Secret")
    if "PROCFLOW_STORE_PASSWORD_FILE" not in env or "PROCFLOW_STORE_PASSWORD" in env and "value" in env["PROCFLOW_STORE_PASSWORD"]:
        fail(where, "the database password comes from a mounted Secret file")
    # Replicas fan out to each other: peers from a headless Service, the link authenticated
    # by a token from a Secret (never a literal in the pod spec).
    peers = env.get("PROCFLOW_PEERS", {}).get("value", "")
    headless = {
        o["metadata"]["name"]
        for o in objects
        if o["kind"] == "Service" and o["spec"].get("clusterIP") == "None"
        and o["spec"].get("selector") == labels
    }
    if not any(peers.startswith(f"{name}.") for name in headless):
        fail(where, "PROCFLOW_PEERS must name a headless Service selecting the aggregator")
    token = env.get("PROCFLOW_PEER_TOKEN_FILE", {}).get("value", "")
    mounts = {
        m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])
    }
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    mount = next((name for path, name in mounts.items() if token.startswith(path + "/")), None)
    if not token or mount is None or "secret" not in volumes.get(mount, {}):
        fail(where, "the peer token comes from a mounted Secret file")
    if "PROCFLOW_PEER_TLS_CA" not in env:
        fail(where, "peer links verify the replicas' TLS certificates")
    for secret in (o for o in objects if o["kind"] == "Secret" and "url" in o.get("stringData", {})):
        url = secret["stringData"]["url"]
        if "@" in url and ":" in url.split("://", 1)[-1].split("@", 1)[0]:
            fail(where, "the database URL must not carry a password")


def check_eksctl():
    path = ROOT / "kubernetes/examples/fargate-profile.eksctl.yaml"
    doc = load_yaml_docs(path)[0]
    if doc.get("kind") != "ClusterConfig" or not doc.get("fargateProfiles"):
        fail(path, "must be an eksctl ClusterConfig with fargateProfiles")
    for profile in doc.get("fargateProfiles", []):
        if not profile.get("name") or not profile.get("selectors"):
            fail(path, "each Fargate profile needs a name and selectors")


def main():
    rendered = {
        "kubernetes/aggregator": render(ROOT / "kubernetes/aggregator"),
        "kubernetes/aggregator-postgres": render(ROOT / "kubernetes/aggregator-postgres"),
        "kubernetes/examples/app": render(ROOT / "kubernetes/examples/app"),
    }
    for where, objects in rendered.items():
        validate_k8s(where, objects)
        print(f"{where}: {len(objects)} objects rendered and validated against Kubernetes {K8S_VERSION}")
    check_sidecar("kubernetes/examples/app", rendered["kubernetes/examples/app"])
    check_aggregator("kubernetes/aggregator", rendered["kubernetes/aggregator"])
    check_aggregator("kubernetes/aggregator-postgres", rendered["kubernetes/aggregator-postgres"])
    check_postgres("kubernetes/aggregator-postgres", rendered["kubernetes/aggregator-postgres"])
    check_ecs()
    check_eksctl()
    if failures:
        print(f"\n{len(failures)} problem(s):", file=sys.stderr)
        for f in failures:
            print(f"  - {f}", file=sys.stderr)
        sys.exit(1)
    print("deploy-check: all manifests valid")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Checks the manifests of docker/k8s without a cluster or kubectl: YAML syntax, the fields
`kubectl apply --dry-run=client` would insist on, and the links between the objects (selectors
and pod labels, named ports, volumes and ConfigMaps, the ${VAR}s of gatehouse's configuration
and the variables the pod gets), plus the shutdown arithmetic: terminationGracePeriodSeconds
must exceed the configuration's shutdown.delay + shutdown.timeout, and the ports: the probes
of /healthz and /readyz and the prometheus.io/port annotation must reach the configuration's
admin.address (a port of the container, not a loopback address), and each listen address must
be a port of the container. It does not know the full Kubernetes schema: unknown or misspelt
optional fields pass.

    /usr/bin/python3 docker/k8s/check_manifests.py [--gatehouse BIN] [DIR]

--gatehouse BIN also runs `BIN --check` on the ConfigMap's gatehouse.yaml (BIN may be a
command, e.g. "docker run --rm -i --entrypoint gatehouse gatehouse"; the file then comes on
stdin as /dev/stdin). Exit status 0 when all is well, 1 otherwise.
"""
import argparse
import glob
import os
import re
import shlex
import subprocess
import sys
import tempfile

import yaml   # Debian's python3-yaml

errors = []


def err(where, msg):
    errors.append("%s: %s" % (where, msg))


def need(obj, path, where):
    """obj's value at dotted |path|, or None after an error when it is missing or empty."""
    cur = obj
    for key in path.split("."):
        if not isinstance(cur, dict) or cur.get(key) in (None, "", [], {}):
            err(where, "missing required field %s" % path)
            return None
        cur = cur[key]
    return cur


def duration_s(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(text).strip())
    if not m:
        raise ValueError("bad duration %r" % text)
    n, unit = int(m.group(1)), m.group(2) or "s"
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")


def addr_port(addr):
    """(host, port) of an IP:PORT, [IPv6]:PORT or *:PORT address, or None (also for one
    that a ${VAR} makes, which only the pod's environment decides)."""
    if "${" in str(addr):
        return None
    m = re.fullmatch(r"(\[[^]]*\]|[^:]*):(\d+)", str(addr).strip())
    return (m.group(1).strip("[]"), int(m.group(2))) if m else None


def check_ports(cfg, dep, w):
    """The configuration's listen and admin addresses against Deployment |dep|'s containers:
    every listen port is a containerPort; the admin listener is on the pod's address, and
    the probes of /healthz and /readyz and the Prometheus annotation use its port."""
    spec = dep["spec"]["template"]["spec"]
    name = dep["metadata"]["name"]
    named, numbers = {}, set()
    for c in spec.get("containers", []):
        for p in c.get("ports", []):
            numbers.add(p.get("containerPort"))
            if p.get("name"):
                named[p["name"]] = p.get("containerPort")
    for l in (cfg or {}).get("listen") or []:
        hp = addr_port((l or {}).get("address"))
        if "${" in str((l or {}).get("address")):
            continue
        if hp is None or hp[1] not in numbers:
            err(w, "Deployment %s: listen address %s is not a containerPort"
                % (name, (l or {}).get("address")))
    admin_addr = ((cfg or {}).get("admin") or {}).get("address")
    if "${" in str(admin_addr):
        return
    admin = addr_port(admin_addr)
    probes = [(c.get("name"), kind, c[kind]["httpGet"])
              for c in spec.get("containers", [])
              for kind in ("readinessProbe", "livenessProbe", "startupProbe")
              if "httpGet" in (c.get(kind) or {})]
    admin_probes = [pr for pr in probes if pr[2].get("path") in ("/healthz", "/readyz")]
    if admin_probes and admin is None:
        err(w, "Deployment %s probes /healthz or /readyz, but the configuration has no "
            "admin.address" % name)
        return
    if admin is None:
        return
    if admin[0] in ("127.0.0.1", "::1", "localhost") or admin[0].startswith("127."):
        err(w, "admin.address %s:%d is loopback: the kubelet's probes come to the pod's "
            "address" % admin)
    if admin[1] not in numbers:
        err(w, "Deployment %s: admin port %d is not a containerPort" % (name, admin[1]))
    for cname, kind, get in admin_probes:
        port = get.get("port")
        port = named.get(port, port) if isinstance(port, str) else port
        if port != admin[1]:
            err(w, "Deployment %s container %s: %s GET %s on port %s, but admin.address is "
                "port %d" % (name, cname, kind, get.get("path"), get.get("port"), admin[1]))
        else:
            print("check_manifests: Deployment %s: %s GET %s on port %s = admin.address port"
                  " %d" % (name, kind, get.get("path"), get.get("port"), admin[1]))
    ann = (dep["spec"]["template"].get("metadata") or {}).get("annotations") or {}
    if "prometheus.io/port" in ann and str(ann["prometheus.io/port"]) != str(admin[1]):
        err(w, "Deployment %s: prometheus.io/port %s is not admin.address's port %d"
            % (name, ann["prometheus.io/port"], admin[1]))


def check_pod(spec, where, configmaps):
    """Returns {port name: number} of the pod's containers."""
    ports = {}
    containers = need(spec, "containers", where) or []
    vols = {v.get("name"): v for v in spec.get("volumes", [])}
    for v in spec.get("volumes", []):
        cm = v.get("configMap")
        if cm is not None and cm.get("name") not in configmaps:
            err(where, "volume %s: no ConfigMap %s in these manifests"
                % (v.get("name"), cm.get("name")))
    for c in containers:
        cw = "%s container %s" % (where, c.get("name"))
        need(c, "name", cw)
        need(c, "image", cw)
        for p in c.get("ports", []):
            if "containerPort" not in p:
                err(cw, "port without containerPort")
            name = p.get("name")
            if name is not None:
                if len(name) > 15 or not NAME_RE.match(name):
                    err(cw, "port name %r is not an IANA_SVC_NAME (<= 15 chars)" % name)
                ports[name] = p.get("containerPort")
        for m in c.get("volumeMounts", []):
            if m.get("name") not in vols:
                err(cw, "volumeMount %s: no such volume" % m.get("name"))
            if not str(m.get("mountPath", "")).startswith("/"):
                err(cw, "volumeMount %s: mountPath must be absolute" % m.get("name"))
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            pr = c.get(probe)
            if pr is None:
                continue
            handler = [k for k in ("httpGet", "tcpSocket", "exec", "grpc") if k in pr]
            if len(handler) != 1:
                err(cw, "%s needs exactly one of httpGet, tcpSocket, exec, grpc" % probe)
                continue
            port = pr[handler[0]].get("port") if handler[0] != "exec" else None
            if isinstance(port, str) and port not in ports:
                err(cw, "%s: port %r is not a named port of the container" % (probe, port))
        for e in c.get("env", []):
            need(e, "name", cw + " env")
            if "value" not in e and "valueFrom" not in e:
                err(cw, "env %s: neither value nor valueFrom" % e.get("name"))
    return ports


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gatehouse", help="a gatehouse binary or command to --check the config")
    ap.add_argument("dir", nargs="?", default=os.path.dirname(os.path.abspath(__file__)))
    args = ap.parse_args()

    docs = []
    for path in sorted(glob.glob(os.path.join(args.dir, "*.yaml"))):
        try:
            with open(path) as f:
                for i, d in enumerate(yaml.safe_load_all(f)):
                    if d is not None:
                        docs.append(("%s[%d]" % (os.path.basename(path), i), d))
        except yaml.YAMLError as e:
            err(os.path.basename(path), "YAML: %s" % e)
    if not docs:
        err(args.dir, "no manifests")

    by_kind = {}
    for where, d in docs:
        for f in ("apiVersion", "kind", "metadata.name"):
            need(d, f, where)
        kind = d.get("kind")
        name = (d.get("metadata") or {}).get("name", "")
        if name and not NAME_RE.match(name):
            err(where, "metadata.name %r is not a DNS-1123 label" % name)
        by_kind.setdefault(kind, []).append((where, d))
        where_ = "%s (%s %s)" % (where, kind, name)
        if kind in ("Deployment",) and d.get("apiVersion") != "apps/v1":
            err(where_, "apiVersion must be apps/v1")
        if kind in ("Service", "ConfigMap") and d.get("apiVersion") != "v1":
            err(where_, "apiVersion must be v1")

    configmaps = {d["metadata"]["name"]: d for _, d in by_kind.get("ConfigMap", [])}
    pods = []   # (labels, ports, env names, deployment doc)
    for where, d in by_kind.get("Deployment", []):
        w = "%s (Deployment %s)" % (where, d["metadata"]["name"])
        sel = need(d, "spec.selector.matchLabels", w) or {}
        labels = need(d, "spec.template.metadata.labels", w) or {}
        for k, v in sel.items():
            if labels.get(k) != v:
                err(w, "selector %s=%s does not match the pod template's labels" % (k, v))
        spec = need(d, "spec.template.spec", w) or {}
        ports = check_pod(spec, w, configmaps)
        env = {e.get("name") for c in spec.get("containers", []) for e in c.get("env", [])}
        pods.append((labels, ports, env, d))

    services = []
    for where, d in by_kind.get("Service", []):
        w = "%s (Service %s)" % (where, d["metadata"]["name"])
        sel = need(d, "spec.selector", w) or {}
        match = [p for p in pods if all(p[0].get(k) == v for k, v in sel.items())]
        if not match:
            err(w, "selector %s matches no pod template in these manifests" % sel)
        for p in need(d, "spec.ports", w) or []:
            if "port" not in p:
                err(w, "port without port")
            tp = p.get("targetPort", p.get("port"))
            if isinstance(tp, str) and not all(tp in m[1] for m in match):
                err(w, "targetPort %r is not a named port of the pods it selects" % tp)
        services.append(d["metadata"]["name"])

    # gatehouse's configuration: YAML, its ${VAR}s provided, the shutdown arithmetic.
    for where, d in by_kind.get("ConfigMap", []):
        text = (d.get("data") or {}).get("gatehouse.yaml")
        if text is None:
            continue
        w = "%s (ConfigMap %s) gatehouse.yaml" % (where, d["metadata"]["name"])
        try:
            cfg = yaml.safe_load(text)
        except yaml.YAMLError as e:
            err(w, "YAML: %s" % e)
            continue
        users = [p for p in pods if any(
            (v.get("configMap") or {}).get("name") == d["metadata"]["name"]
            for v in p[3]["spec"]["template"]["spec"].get("volumes", []))]
        if not users:
            err(w, "mounted by no Deployment")
        links = set()
        for s in services:
            base = s.upper().replace("-", "_")
            links |= {base + "_SERVICE_HOST", base + "_SERVICE_PORT"}
        for var in sorted(set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))):
            for p in users:
                spec = p[3]["spec"]["template"]["spec"]
                if var in p[2]:
                    continue
                if var in links and spec.get("enableServiceLinks", True):
                    continue
                err(w, "${%s} has no default and Deployment %s does not provide it"
                    % (var, p[3]["metadata"]["name"]))
        for p in users:
            check_ports(cfg, p[3], w)
        sd = (cfg or {}).get("shutdown") or {}
        try:
            need_s = duration_s(sd.get("delay", "0s")) + duration_s(sd.get("timeout", "30s"))
        except ValueError as e:
            err(w, str(e))
            need_s = 0
        for p in users:
            grace = p[3]["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
            dep = p[3]["metadata"]["name"]
            if grace <= need_s:
                err(w, "Deployment %s: terminationGracePeriodSeconds %s is not more than "
                    "shutdown.delay + shutdown.timeout (%gs)" % (dep, grace, need_s))
            else:
                print("check_manifests: Deployment %s: terminationGracePeriodSeconds %s > "
                      "shutdown.delay + shutdown.timeout = %gs" % (dep, grace, need_s))
        if args.gatehouse:
            env = dict(os.environ, GATEHOUSE_WORKERS="2")
            for i, var in enumerate(sorted(links)):
                env[var] = "10.96.0.%d" % (10 + i) if var.endswith("_HOST") else "9000"
            cmd = shlex.split(args.gatehouse)
            with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
                f.write(text)
                f.flush()
                if len(cmd) > 1:   # a container command: the file on stdin
                    extra = []
                    for var in ["GATEHOUSE_WORKERS"] + sorted(links):
                        extra += ["-e", "%s=%s" % (var, env[var])]
                    cmd = cmd[:-1] + extra + cmd[-1:]
                    run = subprocess.run(cmd + ["--check", "-c", "/dev/stdin"], env=env,
                                         stdin=open(f.name), capture_output=True, text=True)
                else:
                    run = subprocess.run(cmd + ["--check", "-c", f.name], env=env,
                                         capture_output=True, text=True)
            out = (run.stdout + run.stderr).strip().replace(f.name, "gatehouse.yaml")
            # `docker run --rm` through podman 4.3's Docker API reports status 0 whatever
            # the command's: success is also the "configuration ok" line.
            if run.returncode != 0 or "configuration ok" not in run.stdout:
                err(w, "gatehouse --check: %s" % out)
            else:
                print("check_manifests: gatehouse --check: %s" % out)

    for e in errors:
        print("check_manifests: " + e, file=sys.stderr)
    print("check_manifests: %d objects (%s): %s" % (
        len(docs), ", ".join("%d %s" % (len(v), k) for k, v in sorted(by_kind.items())),
        "ok" if not errors else "%d problems" % len(errors)))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

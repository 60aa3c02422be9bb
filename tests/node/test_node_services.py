"""The node's cluster services (tests/harness/node_services.py) as pods see them: CoreDNS behind
kube-dns answers Service names, the public names the harness passes and NXDOMAIN (fast) for the
rest; SeaweedFS's S3 gateway works by its Service name with the keys of the reference's
`seaweedfs-s3-config` Secret, which the project's own reader accepts.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from harness.kube import settings_with
from harness.node import CLUSTER_DNS, KUBERNETES_SERVICE_IP, NODE_IP, KubeNode
from harness.node_services import (
    CLUSTER_DOMAIN,
    S3_NAMESPACE,
    S3_SECRET,
    CoreDNS,
    SeaweedFS,
    netns_exec,
    run_python_pod,
)
from mlflow_stack.kubernetes import client, sources

pytestmark = pytest.mark.integration

NAMESPACE = "services-check"
UNKNOWN = "no-such-host.example.invalid"

# Resolves each name given as an argument (glibc, the pod's resolv.conf: kube-dns, search list,
# ndots:5), then times a lookup that must fail with "name unknown", not a timeout.
RESOLVER = """
import json, socket, sys, time
report = {"resolv.conf": open("/etc/resolv.conf").read()}
for name in sys.argv[1:-1]:
    try:
        report[name] = sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET)})
    except socket.gaierror as exc:
        report[name] = f"error {exc.errno} {exc}"
started = time.monotonic()
try:
    socket.getaddrinfo(sys.argv[-1], 80)
    report["unknown"] = "resolved"
except socket.gaierror as exc:
    report["unknown"] = "NXDOMAIN" if exc.errno == socket.EAI_NONAME else f"error {exc}"
report["unknown seconds"] = round(time.monotonic() - started, 2)
open("/dev/termination-log", "w").write(json.dumps(report))
"""

# Creates a bucket, puts and gets an object through the S3 endpoint by Service name.
S3_ROUND_TRIP = """
import json, os, sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                  aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                  config=Config(s3={"addressing_style": "path"}))
s3.create_bucket(Bucket="pod-check")
s3.put_object(Bucket="pod-check", Key="dir/hello.txt", Body=b"hello from a pod")
body = s3.get_object(Bucket="pod-check", Key="dir/hello.txt")["Body"].read().decode()
names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
open("/dev/termination-log", "w").write(json.dumps({"body": body, "buckets": names}))
"""


def test_pods_resolve_service_and_public_names_and_fail_unknown_ones_fast(
        kube_node: KubeNode, node_dns: CoreDNS, node_s3: SeaweedFS) -> None:
    public, public_ip = next(iter(node_dns.hosts.items()))  # the fixture's
    names = [node_s3.service.host, f"kubernetes.default.svc.{CLUSTER_DOMAIN}", public,
             "kube-dns.kube-system"]  # the last through the search list
    result = run_python_pod(kube_node, NAMESPACE, "resolver", RESOLVER, [*names, UNKNOWN])
    assert result.exit_code == 0, result.log
    report = json.loads(result.message)
    assert f"nameserver {CLUSTER_DNS}" in report["resolv.conf"], report["resolv.conf"]
    assert report[node_s3.service.host] == [node_s3.service.cluster_ip], report
    assert report[names[1]] == [KUBERNETES_SERVICE_IP], report
    assert report[public] == [public_ip], report
    assert report["kube-dns.kube-system"] == [CLUSTER_DNS], report
    assert report["unknown"] == "NXDOMAIN", report
    # Five names (search list and the name itself), A and AAAA each, all answered at once.
    assert report["unknown seconds"] < 3.0, report
    print(f"\nCoreDNS started in {node_dns.startup_seconds} s; unknown name failed after "
          f"{report['unknown seconds']} s in a pod")


def test_coredns_answers_nxdomain_and_takes_new_public_names(node_dns: CoreDNS) -> None:
    for tcp in (False, True):
        reply = node_dns.query(UNKNOWN, tcp=tcp, server=CLUSTER_DNS)
        assert reply.rcode == "NXDOMAIN" and reply.seconds < 1.0, reply
    assert node_dns.query("no-such-service.default.svc.cluster.local").rcode == "NXDOMAIN"
    # A name of the public list only has its A record: AAAA is an empty answer, not NXDOMAIN
    # (which would make a dual-stack resolver give up on the name).
    public = next(iter(node_dns.hosts))
    aaaa = node_dns.query(public, "AAAA")
    assert (aaaa.rcode, aaaa.answers) == ("NOERROR", ()), aaaa
    # Reverse lookups: Services by their IP, and the rest NXDOMAIN (not SERVFAIL).
    ptr = node_dns.query("10.0.96.10.in-addr.arpa", "PTR")
    assert ptr.answers == ("kube-dns.kube-system.svc.cluster.local.",), ptr
    assert node_dns.query("9.9.9.9.in-addr.arpa", "PTR").rcode == "NXDOMAIN"

    extra = "extra.example.test"
    before = dict(node_dns.hosts)
    node_dns.set_hosts({**before, extra: "10.99.0.7"})
    try:
        assert node_dns.query(extra).answers == ("10.99.0.7",)
    finally:
        node_dns.set_hosts(before)
    assert node_dns.query(extra).rcode == "NXDOMAIN"


def test_a_pod_uses_s3_by_service_name_with_the_secrets_keys(
        kube_node: KubeNode, node_dns: CoreDNS, node_s3: SeaweedFS) -> None:
    # The keys as the project reads them from the reference's Secret.
    settings = settings_with({
        "artifacts": {"backend": "s3", "endpoint_url": node_s3.endpoint,
                      "credentials_secret": S3_SECRET, "credentials_namespace": S3_NAMESPACE},
        "kubernetes": {"kubeconfig": str(kube_node.admin_kubeconfig)},
    })
    key_id, key = sources.s3_keys_from_cluster(client.connect(settings), settings)
    assert (key_id.get_secret_value(), key.get_secret_value()) == \
        (node_s3.access_key, node_s3.secret_key)

    started = time.monotonic()
    result = run_python_pod(kube_node, NAMESPACE, "s3-client", S3_ROUND_TRIP, [node_s3.endpoint],
                            env={"AWS_ACCESS_KEY_ID": key_id.get_secret_value(),
                                 "AWS_SECRET_ACCESS_KEY": key.get_secret_value()})
    assert result.exit_code == 0, result.log
    report = json.loads(result.message)
    assert report["body"] == "hello from a pod" and "pod-check" in report["buckets"], report
    # The same object from the harness's side (the gateway's own address in the namespace).
    body = node_s3.s3(lambda s3: s3.get_object(Bucket="pod-check", Key="dir/hello.txt")
                      ["Body"].read())
    assert body == b"hello from a pod"
    # Wrong keys are refused.
    wrong = run_python_pod(kube_node, NAMESPACE, "s3-wrong-key", S3_ROUND_TRIP,
                           [node_s3.endpoint], env={"AWS_ACCESS_KEY_ID": key_id.get_secret_value(),
                                                    "AWS_SECRET_ACCESS_KEY": "wrong"})
    assert wrong.exit_code != 0 and "SignatureDoesNotMatch" in wrong.log, wrong.log
    memory = kube_node.memory()
    print(f"\nSeaweedFS started in {node_s3.startup_seconds} s; pod round trip "
          f"{time.monotonic() - started:.1f} s; RSS MiB: seaweedfs {memory['seaweedfs']:.0f}, "
          f"coredns {memory['coredns']:.0f}")


def test_netns_exec_processes_resolve_cluster_names(
        kube_node: KubeNode, node_dns: CoreDNS, node_s3: SeaweedFS) -> None:
    assert node_dns.resolv_conf.read_text().startswith(f"nameserver {NODE_IP}\n")
    snippet = ("import socket, sys; print(' '.join(socket.gethostbyname(n) "
               "for n in sys.argv[1:]))")
    result = netns_exec(kube_node, [sys.executable, "-c", snippet, node_s3.service.host,
                                    "seaweedfs-filer.seaweedfs", "kubernetes.default.svc"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [node_s3.service.cluster_ip, node_s3.service.cluster_ip,
                                     KUBERNETES_SERVICE_IP], result.stdout

"""The proxy image's entrypoint (meshwright.pod): the capture rules the init container applies,
the settings the istio-proxy container reads from the injector's environment, and the pod's
bootstrap, which real Envoy accepts. tests/kubernetes_node runs them in real pods."""

from __future__ import annotations

import http.client
import json

import pytest

from meshwright.agent import write_secret_files
from meshwright.check.envoy_binary import envoy_validate, find_envoy
from meshwright.deliver.kube_inject import InjectionSettings, injected_pod
from meshwright.pki import ca, csr, workload
from meshwright.pki.store import write_workload_certificates
from meshwright.pod import (Capture, PodError, app_probe_server, app_probers_from_environment, build_parser, capture_rules, pod_bootstrap,
                            pod_proxy_from_environment)
from tests.harness import Backend, free_port

ENVIRONMENT = {"POD_NAME": "reviews-7d9f", "POD_NAMESPACE": "shop", "INSTANCE_IP": "10.244.0.7", "SERVICE_ACCOUNT": "reviews",
               "MESHWRIGHT_XDS_ADDRESS": "10.244.0.1:15012", "MESHWRIGHT_CSR_ADDRESS": "10.244.0.1:15016",
               "MESHWRIGHT_TRUST_DOMAIN": "cluster.local", "MESHWRIGHT_TOKEN_FILE": "/var/run/secrets/tokens/meshwright-token",
               "MESHWRIGHT_CERTS_DIR": "/etc/istio/proxy/certs"}


def test_the_capture_rules_leave_out_the_proxys_own_traffic_and_the_excluded_ports():
    rules = capture_rules(Capture(1337, exclude_inbound="15000,15021", exclude_outbound_ports="443",
                                  exclude_outbound_ranges="10.244.0.1/32")).splitlines()
    assert rules[0] == "*nat" and rules[-1] == "COMMIT"
    assert "-A MESHWRIGHT_INBOUND -p tcp --dport 15021 -j RETURN" in rules
    assert rules.index("-A MESHWRIGHT_INBOUND -p tcp --dport 15021 -j RETURN") < rules.index("-A MESHWRIGHT_INBOUND -p tcp -j MESHWRIGHT_IN_REDIRECT")
    assert "-A MESHWRIGHT_OUTPUT -m owner --uid-owner 1337 -j RETURN" in rules
    assert "-A MESHWRIGHT_OUTPUT -p tcp --dport 443 -j RETURN" in rules
    assert "-A MESHWRIGHT_OUTPUT -d 10.244.0.1/32 -j RETURN" in rules
    assert rules[-2] == "-A MESHWRIGHT_OUTPUT -j MESHWRIGHT_REDIRECT"


def test_include_lists_capture_only_what_they_name():
    rules = capture_rules(Capture(1337, include_inbound="8000,9080", include_outbound_ranges="10.0.0.0/24")).splitlines()
    assert "-A MESHWRIGHT_INBOUND -p tcp --dport 9080 -j MESHWRIGHT_IN_REDIRECT" in rules
    assert "-A MESHWRIGHT_INBOUND -p tcp -j MESHWRIGHT_IN_REDIRECT" not in rules
    assert "-A MESHWRIGHT_OUTPUT -d 10.0.0.0/24 -j MESHWRIGHT_REDIRECT" in rules
    assert "-A MESHWRIGHT_OUTPUT -j MESHWRIGHT_REDIRECT" not in rules


@pytest.mark.parametrize(("capture", "message"), [
    (Capture(1337, exclude_inbound="15000,http"), "--exclude-inbound-ports '15000,http': 'http' is not a port (1-65535)"),
    (Capture(1337, exclude_outbound_ports="70000"), "--exclude-outbound-ports '70000': '70000' is not a port (1-65535)"),
    (Capture(1337, exclude_outbound_ranges="10.0.0.0/33"), "--exclude-outbound-ip-ranges '10.0.0.0/33': '10.0.0.0/33' is not an IPv4 address or CIDR range"),
])
def test_a_bad_capture_annotation_is_refused_naming_it(capture, message):
    with pytest.raises(PodError) as refused:
        capture_rules(capture)
    assert str(refused.value) == message


def test_the_injectors_init_container_arguments_are_what_capture_takes():
    settings = InjectionSettings("local.test/meshwright-proxy:0.1.0", "10.244.0.1:15012", "10.244.0.1:15016")
    pod = {"metadata": {"name": "p", "annotations": {"traffic.sidecar.istio.io/excludeOutboundPorts": "5432"}},
           "spec": {"containers": [{"name": "app", "image": "app"}]}}
    injected = injected_pod(pod, settings)
    init, proxy = injected["spec"]["initContainers"][0], injected["spec"]["containers"][1]
    args = build_parser().parse_args(init["args"])
    assert (args.proxy_uid, args.exclude_outbound_ports) == (1337, "5432")
    assert build_parser().parse_args(proxy["args"]).role == "sidecar"
    named = {variable["name"] for variable in proxy["env"]}
    assert set(ENVIRONMENT) <= named and "MESHWRIGHT_CA_FILE" in named


def test_a_missing_or_bad_setting_names_the_variable():
    with pytest.raises(PodError) as missing:
        pod_proxy_from_environment({k: v for k, v in ENVIRONMENT.items() if k not in ("POD_NAME", "MESHWRIGHT_XDS_ADDRESS")})
    assert str(missing.value) == ("the istio-proxy container needs the environment variables POD_NAME, MESHWRIGHT_XDS_ADDRESS "
                                  "(the injector sets them)")
    with pytest.raises(PodError) as bad:
        pod_proxy_from_environment({**ENVIRONMENT, "MESHWRIGHT_CSR_ADDRESS": "10.244.0.1"})
    assert str(bad.value) == "MESHWRIGHT_CSR_ADDRESS='10.244.0.1': expected HOST:PORT"


def test_the_pods_bootstrap_names_it_dials_the_control_plane_with_mtls_and_envoy_accepts_it(tmp_path):
    bootstrap = pod_bootstrap(pod_proxy_from_environment(ENVIRONMENT))
    assert bootstrap["node"]["cluster"] == "reviews-7d9f.shop"
    assert bootstrap["node"]["metadata"]["CERTS_DIR"] == "/etc/istio/proxy/certs"
    xds = next(c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "xds-grpc")
    assert xds["transport_socket"]["name"] == "envoy.transport_sockets.tls"
    assert xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
        "address": "10.244.0.1", "port_value": 15012}
    tls = xds["transport_socket"]["typed_config"]["common_tls_context"]
    assert tls["tls_certificate_sds_secret_configs"][0]["sds_config"]["path_config_source"] == {
        "path": "/etc/istio/proxy/certs/sds-default.json", "watched_directory": {"path": "/etc/istio/proxy/certs"}}
    # Envoy reads the certificates' files when it validates: the pod's, where the agent writes them
    # (and the SDS files that name them, without which Envoy refuses the bootstrap).
    certs = tmp_path / "certs"
    root = ca.make_root("cluster.local")
    key = csr.make_private_key()
    spiffe = "spiffe://cluster.local/ns/shop/sa/reviews"
    write_workload_certificates(str(certs), key, workload.sign_csr(csr.make_csr(key, spiffe), spiffe, ca.make_intermediate(root, "site")),
                                root.certificate_pem())
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(pod_bootstrap(pod_proxy_from_environment({**ENVIRONMENT, "MESHWRIGHT_CERTS_DIR": str(certs)}))))
    assert "sds-default.json' does not exist" in envoy_validate(find_envoy(), str(path))
    assert write_secret_files(str(certs)) == ["sds-default.json", "sds-rootca.json"]
    path.write_text(json.dumps(pod_bootstrap(pod_proxy_from_environment({**ENVIRONMENT, "MESHWRIGHT_CERTS_DIR": str(certs)}))))
    assert envoy_validate(find_envoy(), str(path)) is None


def _get(port: int, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_the_sidecar_answers_the_rewritten_probes_by_probing_the_app_from_inside_the_pod():
    """The kubelet's /app-health/... on the status port: the app's own answer, 500 when it is not
    there, 404 for a probe the injector did not hand over."""
    states = {"/ready": 200}
    app = Backend("web", "web-1", behaviour=lambda handler, count: (states.get(handler.path, 503), {}))
    closed_port = free_port()
    injected = injected_pod({"metadata": {"name": "web"}, "spec": {"containers": [{
        "name": "app", "image": "x", "ports": [{"name": "http", "containerPort": app.port}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
        "livenessProbe": {"tcpSocket": {"port": app.port}},
        "startupProbe": {"tcpSocket": {"port": closed_port}}}]}}, InjectionSettings("i", "h:1", "h:2"))
    probers = app_probers_from_environment({e["name"]: e.get("value", "") for e in injected["spec"]["containers"][-1]["env"]})
    server = app_probe_server(probers, "127.0.0.1", ("127.0.0.1", 0))
    port = server.server_address[1]
    try:
        assert _get(port, "/app-health/app/readyz")[0] == 200
        assert app.requests[-1]["path"] == "/ready" and app.requests[-1]["headers"]["user-agent"].startswith("kube-probe/")
        states["/ready"] = 503
        assert _get(port, "/app-health/app/readyz")[0] == 503
        assert _get(port, "/app-health/app/livez")[0] == 200
        assert _get(port, "/app-health/app/startupz")[0] == 500
        assert _get(port, "/app-health/other/readyz")[0] == 404
        app.close()
        status, body = _get(port, "/app-health/app/readyz")
        assert status == 500 and "http get" in body
    finally:
        server.shutdown()


def test_bad_probers_from_the_injector_are_named():
    with pytest.raises(PodError) as bad:
        app_probers_from_environment({"ISTIO_KUBE_APP_PROBERS": '{"/app-health/app/readyz": {"exec": {}}}'})
    assert str(bad.value) == "ISTIO_KUBE_APP_PROBERS: expected a JSON object of paths to probes with httpGet or tcpSocket"

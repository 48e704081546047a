"""Reference validation: hosts, subsets, ports and gateways a resource names must exist.

In Istio such mistakes validate and then fail on the wire (503 with response flag NR or UH);
meshwright reports them before anything is written, at the field that names the missing thing.
"""

from __future__ import annotations

import pytest

from tests.unit.validation_cases import Case, check_case

VS = "VirtualService/default/reviews"

CASES = [
    Case(
        "VirtualService host that is not a service",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts:
          - details  #!
          http:
          - route:
            - destination: {host: reviews}
        """,
        VS, "spec.hosts[0]", ("'details.default.svc.cluster.local' is not a service of the mesh", "declare it with a ServiceEntry"),
    ),
    Case(
        "destination host that is not a service",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination:
                host: reviews.prod.svc.cluster.local  #!
        """,
        VS, "spec.http[0].route[0].destination.host", ("'reviews.prod.svc.cluster.local' is not a service of the mesh",),
    ),
    Case(
        "TCP destination host that is not a service",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: db, namespace: default}
        spec:
          hosts: [db]
          tcp:
          - route:
            - destination:
                host: db-replica  #!
        """,
        "VirtualService/default/db", "spec.tcp[0].route[0].destination.host", ("'db-replica.default.svc.cluster.local' is not a service of the mesh",),
    ),
    Case(
        "mirror host that is not a service",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: reviews}
            mirror:
              host: reviews-shadow  #!
        """,
        VS, "spec.http[0].mirror.host", ("'reviews-shadow.default.svc.cluster.local' is not a service of the mesh",),
    ),
    Case(
        "subset the DestinationRule does not define",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination:
                host: reviews
                subset: v3  #!
        """,
        VS, "spec.http[0].route[0].destination.subset",
        ("subset 'v3' of reviews.default.svc.cluster.local is not defined", "DestinationRule/default/reviews defines v1, v2", "add {name: v3, labels: {...}} to its subsets"),
    ),
    Case(
        "subset of a host without DestinationRule",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: ratings, namespace: default}
        spec:
          hosts: [ratings]
          http:
          - route:
            - destination:
                host: ratings
                subset: v1  #!
        """,
        "VirtualService/default/ratings", "spec.http[0].route[0].destination.subset",
        ("subset 'v1' of ratings.default.svc.cluster.local is not defined", "no DestinationRule exists for ratings.default.svc.cluster.local"),
    ),
    Case(
        "destination port the service does not have",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination:
                host: reviews
                port:
                  number: 8080  #!
        """,
        VS, "spec.http[0].route[0].destination.port.number", ("reviews.default.svc.cluster.local has no port 8080 (its ports: 9080)",),
    ),
    Case(
        "gateway that does not exist",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews.example.com]
          gateways:
          - bookinfo-gateway  #!
          http:
          - route:
            - destination: {host: reviews}
        """,
        VS, "spec.gateways[0]", ("gateway default/bookinfo-gateway does not exist", "define a Gateway, or use 'mesh' for sidecars"),
    ),
    Case(
        "gateway in another namespace that does not exist",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          gateways: [mesh, istio-system/ingress]  #!
          http:
          - route:
            - destination: {host: reviews}
        """,
        VS, "spec.gateways[1]", ("gateway istio-system/ingress does not exist",),
    ),
    Case(
        "DestinationRule for a host that is not a service",
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: details, namespace: default}
        spec:
          host: details  #!
          trafficPolicy: {loadBalancer: {simple: RANDOM}}
        """,
        "DestinationRule/default/details", "spec.host", ("'details.default.svc.cluster.local' is not a service of the mesh",),
    ),
    Case(
        "port-level settings for a port the service does not have",
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: ratings, namespace: default}
        spec:
          host: ratings
          trafficPolicy:
            portLevelSettings:
            - port:
                number: 9090  #!
              loadBalancer: {simple: RANDOM}
        """,
        "DestinationRule/default/ratings", "spec.trafficPolicy.portLevelSettings[0].port.number", ("ratings.default.svc.cluster.local has no port 9090",),
    ),
    Case(
        "MUTUAL TLS without a client certificate",
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: ratings, namespace: default}
        spec:
          host: ratings
          trafficPolicy:
            tls:  #!
              mode: MUTUAL
              privateKey: /etc/certs/key.pem
              caCertificates: /etc/certs/ca.pem
        """,
        "DestinationRule/default/ratings", "spec.trafficPolicy.tls", ("tls.mode MUTUAL needs clientCertificate",),
    ),
    Case(
        "HTTPS gateway server without TLS settings",
        """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: ingress, namespace: default}
        spec:
          selector: {istio: ingressgateway}
          servers:
          - port: {number: 443, name: https, protocol: HTTPS}  #!
            hosts: ["*"]
        """,
        "Gateway/default/ingress", "spec.servers[0].tls", ("an HTTPS server needs tls.mode: SIMPLE, MUTUAL, OPTIONAL_MUTUAL or ISTIO_MUTUAL", "PASSTHROUGH (VirtualService tls routes pick the backend by SNI) or AUTO_PASSTHROUGH"),
    ),
    Case(
        "route to a host outside the Sidecar's egress scope",
        """
        apiVersion: networking.istio.io/v1
        kind: Sidecar
        metadata: {name: client, namespace: default}
        spec:
          workloadSelector: {labels: {app: client}}
          egress:  #!
          - hosts: [./reviews.default.svc.cluster.local]
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          http:
          - route:
            - destination: {host: ratings}
        """,
        "Sidecar/default/client", "spec.egress",
        ("proxy client.default", "the routes of reviews.default.svc.cluster.local:9080 send traffic to ratings.default.svc.cluster.local",
         "which these egress hosts do not import", 'add "default/ratings.default.svc.cluster.local" to them'),
    ),
    Case(
        "tls route for a name that is not one of the VirtualService's hosts",
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews, namespace: default}
        spec:
          hosts: [reviews]
          tls:
          - match:
            - sniHosts:
              - api.example.com  #!
            route:
            - destination: {host: reviews}
        """,
        VS, "spec.tls[0].match[0].sniHosts[0]", ("'api.example.com' is not one of the VirtualService's hosts (reviews)",),
    ),
    Case(
        "TLS egress listener whose hosts have no TLS port",
        """
        apiVersion: networking.istio.io/v1
        kind: Sidecar
        metadata: {name: client, namespace: default}
        spec:
          egress:
          - port: {number: 9443, protocol: TLS, name: tls}
            hosts:  #!
            - ./reviews.default.svc.cluster.local
        """,
        "Sidecar/default/client", "spec.egress[0].hosts", ("a TLS egress listener passes TLS through to services chosen by SNI", "no service with a port of protocol HTTPS or TLS"),
    ),
    Case(
        "TLS egress listener to a host of resolution NONE (it would connect to itself)",
        """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: wikipedia, namespace: default}
        spec:
          hosts: ["*.wikipedia.org"]
          resolution: NONE
          ports: [{number: 443, name: https, protocol: HTTPS}]
        ---
        apiVersion: networking.istio.io/v1
        kind: Sidecar
        metadata: {name: client, namespace: default}
        spec:
          egress:
          - port: {number: 9443, protocol: TLS, name: tls}
            hosts:  #!
            - "./*.wikipedia.org"
        """,
        "Sidecar/default/client", "spec.egress[0].hosts",
        ("*.wikipedia.org has resolution NONE", "the listener itself", "Give ServiceEntry/default/wikipedia endpoints or resolution DNS"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_reference_problem(tmp_path, case):
    check_case(tmp_path, case)

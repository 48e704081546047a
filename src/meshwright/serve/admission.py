"""The admission webhooks. /inject: the mutating webhook that injects sidecars into pods
(deliver/kube_inject.py). /validate: the validating webhook (istiod's "validation.istio.io"): the API server sends each
Istio resource created or updated in the cluster (an AdmissionReview, admission.k8s.io/v1) and
the control plane answers whether meshwright accepts it, refusing with the messages
`meshwright validate` prints for the same resource (without the FILE:LINE it has no file for).

Checked: the resource's shape and its own semantics (checks 1 and 3 of validation: fields,
types, values, weights, annotations), as Istio's webhook does. References to other resources
(hosts, gateways, subsets) are not checked at apply time, since `kubectl apply -f folder`
applies them in any order; the control plane checks them when it reads the cluster and
rejects a mesh they break (logged, in `meshwright status`).

HTTPS only (the API server calls nothing else), on the certificate serve issues itself from the
mesh CA (serve/webhook_certificate.py; the webhook configuration's caBundle is the mesh's roots),
or on one given as files.
"""

from __future__ import annotations

import base64
import http.server
import json
import logging
import ssl
import threading

from meshwright.deliver.kube_inject import InjectionSettings, NotInjectable, injection_patch, wants_injection
from meshwright.problems import Problem, Problems, format_path
from meshwright.registry.kubernetes import istio_resource
from meshwright.validate.semantics import check_semantics
from meshwright.validate.shape_check import check_shape

LOG = logging.getLogger("meshwright.serve")
VALIDATE_PATH, INJECT_PATH = "/validate", "/inject"
MAX_REVIEW_BYTES = 3 * 1024 * 1024  # the API server's own limit for a request body is 3 MiB


def problem_text(problem: Problem) -> str:
    """A problem as `meshwright validate` prints it, without FILE:LINE."""
    parts = [problem.resource] if problem.resource else []
    if problem.path:
        parts.append(format_path(problem.path))
    parts.append(problem.message)
    return ": ".join(parts)


def resource_problems(source: str, document: dict) -> list[Problem]:
    """What validation says of one Istio resource on its own (shape and semantics), warnings too."""
    resource = istio_resource(source, document)
    problems = Problems()
    checked = check_shape(resource, problems)
    if checked is not None:
        check_semantics(checked, problems)
    return problems.sorted()


def review_response(review: dict, source: str) -> dict:
    """The AdmissionReview answering review: allowed, or refused with the problems."""
    request = review.get("request") or {}
    response = {"uid": request.get("uid", ""), "allowed": True}
    document = request.get("object")
    if request.get("operation") in ("CREATE", "UPDATE") and isinstance(document, dict):
        problems = resource_problems(source, document)
        errors = [problem_text(p) for p in problems if not p.is_warning]
        warnings = [problem_text(p).replace("warning: ", "", 1) for p in problems if p.is_warning]
        if errors:
            response["allowed"] = False
            response["status"] = {"code": 422, "reason": "Invalid", "message": "\n".join(errors)}
        if warnings:
            response["warnings"] = warnings  # kubectl prints them as "Warning: ..."
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def injection_response(review: dict, settings: InjectionSettings) -> dict:
    """The AdmissionReview answering a pod's creation: the JSON Patch that injects its
    sidecar, or a refusal saying why it cannot be injected (never a half-injected pod)."""
    request = review.get("request") or {}
    response = {"uid": request.get("uid", ""), "allowed": True}
    pod = request.get("object")
    if request.get("operation") == "CREATE" and isinstance(pod, dict) and wants_injection(pod, namespace_enabled=True):
        try:
            patch = injection_patch(pod, settings)
        except NotInjectable as refused:
            response["allowed"] = False
            response["status"] = {"code": 422, "reason": "Invalid", "message": f"meshwright cannot inject this pod: {refused}"}
            patch = []
        if patch:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def webhook_server(host: str, port: int, context: ssl.SSLContext, source: str,
                   injection: InjectionSettings | None = None) -> http.server.ThreadingHTTPServer:
    """POST /validate (and, with injection, POST /inject) over HTTPS with context's certificate,
    in a thread of its own; source names the cluster in logs."""
    answers = {VALIDATE_PATH: lambda review: review_response(review, source)}
    if injection is not None:
        answers[INJECT_PATH] = lambda review: injection_response(review, injection)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("content-length") or 0)
            answer_of = answers.get(self.path.split("?")[0])
            if answer_of is None or not 0 < length <= MAX_REVIEW_BYTES:
                self.send_error(404 if answer_of is None else 413, f"POST {' or '.join(answers)} an AdmissionReview")
                return
            try:
                review = json.loads(self.rfile.read(length))
                answer = answer_of(review)
            except (ValueError, AttributeError) as error:
                self.send_error(400, f"not an AdmissionReview: {error}")
                return
            if not answer["response"]["allowed"]:
                LOG.info("admission refused %s: %s", _named(review), answer["response"]["status"]["message"].replace("\n", "; "))
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, name="admission", daemon=True).start()
    return server


def _named(review: dict) -> str:
    request = review.get("request") or {}
    return f"{(request.get('kind') or {}).get('kind', '?')}/{request.get('namespace', '')}/{request.get('name', '')}"

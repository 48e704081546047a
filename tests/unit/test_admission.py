"""The validating webhook's answers to AdmissionReviews (admission.k8s.io/v1), as the API
server sends them: refused with meshwright's messages, warnings passed on, deletes allowed."""

from __future__ import annotations

from meshwright.serve.admission import review_response


def review(operation: str, spec: dict | None) -> dict:
    obj = None if spec is None else {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                                     "metadata": {"name": "r", "namespace": "shop", "uid": "9b1", "generation": 1}, "spec": spec}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "operation": operation, "namespace": "shop", "name": "r",
                        "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"}, "object": obj}}


def test_an_invalid_resource_is_refused_with_each_problem_and_the_request_uid():
    answer = review_response(review("CREATE", {"hosts": ["r"], "http": [{"route": [{"destination": {"host": "r"}}], "timeout": "soon"}],
                                               "tcp": "x"}), "kubernetes/c1")

    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002" and response["allowed"] is False
    assert response["status"]["message"].splitlines() == [
        "VirtualService/shop/r: spec.http[0].timeout: 'soon' is not a duration such as 500ms, 1.5s, 2m or 1h",
        "VirtualService/shop/r: spec.tcp: expected a list of a TCP route, got string"]


def test_warnings_are_passed_on_and_the_resource_allowed():
    response = review_response(review("UPDATE", {"hosts": ["r"], "http": [{"route": [
        {"destination": {"host": "r", "subset": "a"}, "weight": 1}, {"destination": {"host": "r", "subset": "b"}, "weight": 3}]}]}), "k")["response"]
    assert response["allowed"] is True
    assert [w.split(": ", 2)[:2] for w in response["warnings"]] == [["VirtualService/shop/r", "spec.http[0].route"]]


def test_deletes_are_allowed_whatever_they_delete():
    assert review_response(review("DELETE", None), "k")["response"] == {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": True}

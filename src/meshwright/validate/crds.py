"""meshwright's CustomResourceDefinitions for the Istio API groups it reads from a cluster,
made from the schemas `meshwright validate` checks with (istio_api.KINDS): one source of truth.

The OpenAPI schema says what it can of each field: types, required fields, ranges, enums,
patterns, list lengths. What it cannot say (a host name's rules, RE2 regexes, durations,
fields of which only one may be set, references between resources) is left to meshwright's
own checks (CEL rules for the field groups would exceed the API server's cost budget on
Istio's deeply nested lists): the validating webhook runs them at apply time,
and the control plane runs them on what it reads. So unknown and unsupported fields are kept
(x-kubernetes-preserve-unknown-fields), never pruned: Kubernetes would drop them silently,
and meshwright never ignores configuration; its checks then refuse them with their
did-you-mean and what to do instead.

Versions are the ones Istio serves for each kind (Istio's own CRDs); the first is stored.
"""

from __future__ import annotations

from meshwright.validate.istio_api import KINDS
from meshwright.validate.security_api import PathValue
from meshwright.validate.shape import (
    Address, AddressOrRange, Any, Base64, Bool, Duration, Enum, Int, ListOf, MapOf, Number, Obj, Regex, Schema, Str, Unsupported,
)

# kind -> (group, versions as Istio serves them (stored first), plural, short names)
ISTIO_CRDS = {
    "VirtualService": ("networking.istio.io", ("v1", "v1beta1", "v1alpha3"), "virtualservices", ("vs",)),
    "DestinationRule": ("networking.istio.io", ("v1", "v1beta1", "v1alpha3"), "destinationrules", ("dr",)),
    "ServiceEntry": ("networking.istio.io", ("v1", "v1beta1", "v1alpha3"), "serviceentries", ("se",)),
    "WorkloadEntry": ("networking.istio.io", ("v1", "v1beta1", "v1alpha3"), "workloadentries", ("we",)),
    "WorkloadGroup": ("networking.istio.io", ("v1", "v1beta1", "v1alpha3"), "workloadgroups", ("wg",)),
    "Gateway": ("networking.istio.io", ("v1", "v1beta1", "v1alpha3"), "gateways", ("gw",)),
    "Sidecar": ("networking.istio.io", ("v1", "v1beta1", "v1alpha3"), "sidecars", ()),
    "EnvoyFilter": ("networking.istio.io", ("v1alpha3",), "envoyfilters", ()),
    "PeerAuthentication": ("security.istio.io", ("v1", "v1beta1"), "peerauthentications", ("pa",)),
    "AuthorizationPolicy": ("security.istio.io", ("v1", "v1beta1"), "authorizationpolicies", ("ap",)),
    "RequestAuthentication": ("security.istio.io", ("v1", "v1beta1"), "requestauthentications", ("ra",)),
    "Telemetry": ("telemetry.istio.io", ("v1", "v1alpha1"), "telemetries", ("telemetry",)),
}
# Strings whose rules only meshwright's checks know (the webhook applies them).
_PLAIN_STRINGS = (Str, Regex, Duration, Address, AddressOrRange, PathValue)
_PRESERVED = {"x-kubernetes-preserve-unknown-fields": True}


def openapi_schema(schema: Schema) -> dict:
    """The OpenAPI v3 (structural) schema of one meshwright schema node."""
    if isinstance(schema, Obj):
        return _object_schema(schema)
    if isinstance(schema, ListOf):
        return {"type": "array", "items": openapi_schema(schema.item), **({"minItems": schema.min_items} if schema.min_items else {})}
    if isinstance(schema, MapOf):  # Labels and PortMapOf too: JSON keys are strings
        return {"type": "object", "additionalProperties": openapi_schema(schema.value)}
    if isinstance(schema, Enum):
        return _enum_schema(schema)
    if isinstance(schema, Int):
        return _bounded({"type": "integer"}, schema.minimum, schema.maximum)
    if isinstance(schema, Number):
        return _bounded({"type": "number"}, schema.minimum, schema.maximum)
    if isinstance(schema, Bool):
        return {"type": "boolean"}
    if isinstance(schema, Base64):
        return {"type": "string", "format": "byte"}
    if isinstance(schema, Str) and schema.pattern is not None:
        return {"type": "string", "pattern": f"^(?:{schema.pattern.pattern})$"}
    if isinstance(schema, _PLAIN_STRINGS):
        return {"type": "string"}
    if isinstance(schema, Unsupported):
        return {"description": f"not supported by meshwright yet ({schema.instead})", **_PRESERVED}
    if isinstance(schema, Any):
        return dict(_PRESERVED)
    raise TypeError(f"no OpenAPI schema for {type(schema).__name__}: add it to meshwright.validate.crds")


def _bounded(schema: dict, minimum, maximum) -> dict:
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def _enum_schema(schema: Enum) -> dict:
    kind = "integer" if isinstance(schema.values[0], int) else "string"
    if schema.fold_case:  # any case is accepted (Istio's protocol names): meshwright's checks tell
        return {"type": kind}
    return {"type": kind, "enum": list(schema.values)}


def _object_schema(schema: Obj) -> dict:
    out = {"type": "object", "description": schema.name, "properties": {name: openapi_schema(field) for name, field in schema.fields.items()},
           **_PRESERVED}
    if schema.required:
        out["required"] = list(schema.required)
    return out


def custom_resource_definition(kind: str) -> dict:
    group, versions, plural, short_names = ISTIO_CRDS[kind]
    accepted, spec_schema = KINDS[kind]
    missing = [v for v in versions if f"{group}/{v}" not in accepted]
    if missing:
        raise ValueError(f"{kind}: meshwright does not read {', '.join(missing)} of {group}")
    version_schema = {"type": "object", "properties": {
        "spec": openapi_schema(spec_schema),
        "status": {"type": "object", **_PRESERVED},
    }}
    names = {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower(),
             "categories": ["istio-io", group.split(".")[0] + "-istio-io"]}
    if short_names:
        names["shortNames"] = list(short_names)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}", "labels": {"app.kubernetes.io/part-of": "meshwright"}},
        "spec": {
            "group": group,
            "names": names,
            "scope": "Namespaced",
            "versions": [{"name": version, "served": True, "storage": index == 0, "schema": {"openAPIV3Schema": version_schema},
                          "subresources": {"status": {}}} for index, version in enumerate(versions)],
        },
    }


def custom_resource_definitions() -> list[dict]:
    """Every CRD, in a stable order (by group, then kind)."""
    return [custom_resource_definition(kind) for kind in sorted(ISTIO_CRDS, key=lambda kind: (ISTIO_CRDS[kind][0], kind))]

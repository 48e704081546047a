"""Verdicts by shape (validate/envoy_proto.py): the fields whose text is taken out of a
resource's shape must parse whatever their text is, in every Envoy message meshwright's
config may hold; and resources that differ in anything else get their own verdict."""

from __future__ import annotations

import os
import sys

from google.protobuf.descriptor import FieldDescriptor

from meshwright.compile.build import compile_proxy
from meshwright.compile.proxy import list_proxies
from meshwright.model.load import load_paths
from meshwright.check import envoy_proto
from meshwright.check.envoy_proto import FREE_TEXT_FIELDS, FREE_TEXT_FIRST_FIELDS, TYPES, UINT32_FIELDS, ResourceVerdicts, resource_shape
from meshwright.check.pipeline import validate_resources
from tests.golden.golden import CASES_DIR, case_names

# A message given a string fails to parse whatever the string, except these, which read text.
TEXT_READING_MESSAGES = ("google.protobuf.",)


def _messages(descriptor):
    yield descriptor
    for nested in descriptor.nested_types:
        yield from _messages(nested)


def loaded_envoy_messages():
    """Every message of the Envoy proto modules imported once the golden cases are checked."""
    for case in case_names():
        mesh, _ = validate_resources(load_paths([os.path.join(CASES_DIR, case, "mesh.yaml")]))
        for proxy in list_proxies(mesh):
            config = compile_proxy(mesh, proxy)
            for kind in ("listeners", "routes", "clusters", "endpoints"):
                for resource in getattr(config, kind):
                    assert envoy_proto.check_resource(TYPES[kind], resource) is None
    for name, module in list(sys.modules.items()):
        if name.startswith("envoy.") and name.endswith("_pb2"):
            for message in module.DESCRIPTOR.message_types_by_name.values():
                yield from _messages(message)


def test_free_text_fields_parse_whatever_their_text():
    checked = 0
    for message in loaded_envoy_messages():
        for field in message.fields:
            if field.name not in FREE_TEXT_FIELDS:
                continue
            checked += 1
            where = f"{message.full_name}.{field.name}"
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                # Text there is always an error (a message wants an object), but for
                # google.protobuf types, which read text (a Duration, a StringValue).
                assert field.message_type.full_name == "google.protobuf.StringValue" or not field.message_type.full_name.startswith(TEXT_READING_MESSAGES), where
            else:
                assert field.type == FieldDescriptor.TYPE_STRING, where
    assert checked > 20


def test_number_fields_taken_out_are_uint32_wherever_they_are():
    """Any number of up to nine digits parses as a uint32 (or its wrapper): the shape may say 0."""
    checked = 0
    for message in loaded_envoy_messages():
        for field in message.fields:
            if field.name in UINT32_FIELDS:
                checked += 1
                where = f"{message.full_name}.{field.name}"
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    assert field.message_type.full_name == "google.protobuf.UInt32Value", where
                else:
                    assert field.type == FieldDescriptor.TYPE_UINT32, where
    assert checked >= 3


def test_load_assignments_that_differ_in_ports_and_weights_share_a_verdict_and_bad_numbers_do_not():
    def assignment(port, weight=1) -> dict:
        return {"cluster_name": "outbound|80||a", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
            "address": "10.0.0.1", "port_value": port}}}, "load_balancing_weight": weight}]}]}

    endpoints = TYPES["endpoints"]
    assert resource_shape(endpoints, assignment(31000, 3)) == resource_shape(endpoints, assignment(8080))
    assert len({resource_shape(endpoints, assignment(port)) for port in (-1, 4294967296, 80.5, 80)}) == 4
    verdicts = ResourceVerdicts()
    assert verdicts.check(endpoints, assignment(31000)) is None
    assert verdicts.check(endpoints, assignment(-1)) is not None
    assert verdicts.check(endpoints, assignment(4294967296)) is not None


def test_free_text_first_fields_are_text_in_every_message_their_outer_field_holds():
    checked = 0
    for message in loaded_envoy_messages():
        for outer, inner in FREE_TEXT_FIRST_FIELDS:
            field = message.fields_by_name.get(outer)
            if field is None or field.type != FieldDescriptor.TYPE_MESSAGE or inner not in field.message_type.fields_by_name:
                continue
            checked += 1
            assert field.message_type.fields_by_name[inner].type == FieldDescriptor.TYPE_STRING, f"{message.full_name}.{outer}.{inner}"
    assert checked > 0


def test_every_resource_name_is_text():
    for type_name in TYPES.values():
        message = envoy_proto.message_class(type_name).DESCRIPTOR
        if "name" in message.fields_by_name:
            assert message.fields_by_name["name"].type == FieldDescriptor.TYPE_STRING, type_name


def test_resources_that_differ_only_in_free_text_share_a_verdict_and_others_do_not():
    cluster = {"name": "outbound|80||a", "type": "EDS", "connect_timeout": "10s", "eds_cluster_config": {"service_name": "outbound|80||a", "eds_config": {"ads": {}}}}
    renamed = {**cluster, "name": "outbound|80||b", "eds_cluster_config": {**cluster["eds_cluster_config"], "service_name": "outbound|80||b"}}
    slower = {**cluster, "connect_timeout": "11s"}
    kind = TYPES["clusters"]
    assert resource_shape(kind, cluster) == resource_shape(kind, renamed)
    assert resource_shape(kind, cluster) != resource_shape(kind, slower)
    bad = {**cluster, "connect_timeout": "ten seconds"}
    verdicts = ResourceVerdicts()
    assert [verdicts.check(kind, r) is None for r in (cluster, renamed, bad)] == [True, True, False]


def test_a_route_configuration_written_from_its_shared_virtual_hosts_has_the_shape_of_its_whole_text():
    items: dict = {}
    compared = 0
    for case in case_names():
        mesh, _ = validate_resources(load_paths([os.path.join(CASES_DIR, case, "mesh.yaml")]))
        for proxy in list_proxies(mesh):
            for route_config in compile_proxy(mesh, proxy).routes:
                kind = TYPES["routes"]
                assert resource_shape(kind, route_config, items) == resource_shape(kind, route_config)
                compared += 1
    assert compared > 20 and items, "the golden cases must have route configurations with virtual hosts"


def test_a_bad_virtual_host_met_again_in_another_route_configuration_is_still_refused():
    host = {"name": "a", "domains": ["a"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c", "timeout": "soon"}}]}
    verdicts = ResourceVerdicts()
    kind = TYPES["routes"]
    first = verdicts.check(kind, {"name": "80", "virtual_hosts": [host]})
    again = verdicts.check(kind, {"name": "81", "virtual_hosts": [host, {"name": "b", "domains": ["b"]}]})
    assert first and "timeout" in first and again and "timeout" in again

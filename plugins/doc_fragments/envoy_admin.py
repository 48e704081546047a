# -*- coding: utf-8 -*-
"""The address of a proxy's Envoy admin interface, for the modules that read it."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  admin_address:
    description: Address of the proxy's admin interface (it listens on loopback only).
    type: str
    default: 127.0.0.1
"""

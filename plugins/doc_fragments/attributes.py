# -*- coding: utf-8 -*-
"""The attributes meshwright's modules share (as community.crypto's attributes fragment)."""

from __future__ import annotations


class ModuleDocFragment:
    # Every meshwright module: POSIX hosts (the controller's, for the action plugins).
    DOCUMENTATION = r"""
options: {}
attributes:
  platform:
    support: full
    platforms: posix
"""

    # Modules that only read (the *_info modules) or only compute (the controller's pipes): nothing to diff.
    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details: It changes nothing, so it runs in check mode as it does otherwise.
  diff_mode:
    support: N/A
    details: It changes nothing.
"""

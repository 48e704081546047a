"""Pausing Python's cyclic garbage collector around work that builds large trees."""

from __future__ import annotations

import gc
from contextlib import contextmanager


@contextmanager
def cyclic_collector_paused():
    """Loading, compiling, checking and rendering build trees of dicts and lists, which hold
    no reference cycles, so the cyclic garbage collector finds nothing in them; but each of
    its full passes walks every object alive (the mesh and the output so far), and in a large
    mesh those passes cost more than the work. Reference counting frees memory as usual
    meanwhile; whatever cycle a library makes is collected once the collector runs again."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()

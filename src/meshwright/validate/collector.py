"""Validating a large estate holds millions of loaded objects that live until it ends; each
full run of Python's cyclic garbage collector would go through all of them again (about a
sixth of checks 1-3 at 10,000 services). Freezing what exists when a check starts takes it out
of those runs; unfreezing at the end gives it back, so nothing is kept longer than before."""

from __future__ import annotations

import functools
import gc


def sparing_loaded_objects(function):
    """Run function with the objects that exist when it starts frozen (gc.freeze), unless
    someone else froze objects already (a server before it forks): that is left alone."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if gc.get_freeze_count():
            return function(*args, **kwargs)
        gc.freeze()
        try:
            return function(*args, **kwargs)
        finally:
            gc.unfreeze()

    return wrapper

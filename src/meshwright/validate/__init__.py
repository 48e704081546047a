"""Validation of mesh config as written: shape, references, semantics. Above the compiler
(it asks which resources select which proxy); the checks of compiled output are
meshwright.check."""

"""Operating a deployed mesh: how an estate-wide change is cut into batches."""

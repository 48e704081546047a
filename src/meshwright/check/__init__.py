"""Checks of compiled output, and the order of every check (pipeline.validate_mesh): each
proxy's resources parsed by Envoy's protos, port clashes, routes to clusters the proxy
lacks, trace collectors it cannot reach, and `envoy --mode validate` of a real Envoy.
Above the compiler and the input validation (meshwright.validate) it runs; below delivery."""

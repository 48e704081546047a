"""meshwright: the Istio API compiled to Envoy config for hybrid estates."""

__version__ = "0.1.0"

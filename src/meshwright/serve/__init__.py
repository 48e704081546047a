"""The live control plane (`meshwright serve`): the compiled mesh served over ADS (docs/control-plane.md)."""

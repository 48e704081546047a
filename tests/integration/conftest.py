"""Fixtures for real-Envoy tests: a mesh written to a temp dir, proxies rendered and started,
backends started; everything stopped at the end of the test."""

from __future__ import annotations

import textwrap

import pytest

from tests.harness import Backend, Envoy, render


class MeshLab:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.backends: list[Backend] = []
        self.envoys: list[Envoy] = []
        self.mesh_path = str(tmp_path / "mesh.yaml")

    def write_mesh(self, text: str) -> str:
        with open(self.mesh_path, "w") as handle:
            handle.write(textwrap.dedent(text))
        return self.mesh_path

    def backend(self, *args, **kwargs) -> Backend:
        backend = Backend(*args, **kwargs)
        self.backends.append(backend)
        return backend

    def proxy(self, name: str, admin_port: int) -> Envoy:
        """Render proxy `name` (name.namespace) and start Envoy on it."""
        out_dir = str(self.tmp_path / name)
        render(self.mesh_path, name, out_dir)
        envoy = Envoy(out_dir, admin_port)
        self.envoys.append(envoy)
        return envoy

    def rerender(self, name: str) -> None:
        render(self.mesh_path, name, str(self.tmp_path / name))

    def close(self) -> None:
        for envoy in self.envoys:
            envoy.stop()
        for backend in self.backends:
            backend.close()


@pytest.fixture
def lab(tmp_path):
    mesh_lab = MeshLab(tmp_path)
    yield mesh_lab
    mesh_lab.close()

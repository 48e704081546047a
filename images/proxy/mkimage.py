"""A docker-archive image (one layer) from a root folder, as `ctr images import` loads it.

usage: mkimage.py ROOTFS IMAGE OUT.tar [--entrypoint JSON]

Files are owned by root in the layer and their times are 0:
the layer of one tree has one digest.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import tarfile
import tempfile


def _reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info


def write_layer(rootfs: str, path: str) -> str:
    """The layer tar at path; its sha256 (the diff ID)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as layer:
        for name in sorted(os.listdir(rootfs)):
            layer.add(os.path.join(rootfs, name), arcname=name, filter=_reset)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rootfs")
    parser.add_argument("image")
    parser.add_argument("out")
    parser.add_argument("--entrypoint", default="null")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.out))) as work:
        layer_path = os.path.join(work, "layer.tar")
        diff_id = write_layer(args.rootfs, layer_path)
        config = json.dumps({
            "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                       "Entrypoint": json.loads(args.entrypoint), "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        }, sort_keys=True).encode()
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        manifest = json.dumps([{"Config": config_name, "RepoTags": [args.image], "Layers": [f"{diff_id}/layer.tar"]}]).encode()
        with tarfile.open(args.out, "w") as archive:
            _add_bytes(archive, config_name, config)
            archive.add(layer_path, arcname=f"{diff_id}/layer.tar", filter=_reset)
            _add_bytes(archive, "manifest.json", manifest)
    print(f"{args.out}: {args.image}, layer sha256:{diff_id}")


if __name__ == "__main__":
    main()

"""Export a model's networks to ONNX, next to its weights.

    python -m difftori_core.export <checkpoint|model dir|run dir> [--opset 17] [--out DIR]

Writes `<model>/onnx/` (see `difftori_core.deploy.export`): the observation encoder(s) and the
base network as ONNX graphs with a dynamic batch axis, and `manifest.json` (hashes, parity).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from difftori_core.artifacts import ONNX_DIR, ArtifactError
from difftori_core.checkpoint import build_policy, read_model
from difftori_core.config import to_dict
from difftori_core.deploy.export import DEFAULT_OPSET, export_policy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint, shipped model (models/<name>) or run directory")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default <model>/{ONNX_DIR})")
    args = parser.parse_args(argv)
    try:
        info = read_model(args.checkpoint)
        policy = build_policy(info, "cpu")
    except ArtifactError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    manifest = export_policy(policy, info.path, to_dict(info.processing), args.opset, args.out)
    out = args.out or info.path / ONNX_DIR
    for entry in manifest["networks"].values():
        size = (out / entry["file"]).stat().st_size / 1e6
        print(f"{out / entry['file']}: {size:.2f} MB, max |onnxruntime - torch| = {entry['parity_max_abs_error']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the controller finds a model: a path, or the name of an installed model.

`model:=door-open-v3-difftori` works from any directory: names are looked up in the models
installed with the package (`<prefix>/share/difftori_ros/models/`, for every prefix on
AMENT_PREFIX_PATH and for this interpreter's own prefix, where `pip install` puts them) and in a
source checkout's `models/`. A value that is an existing path is used as it is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "difftori_ros"


def model_dirs() -> list[Path]:
    """Folders that hold installed models, in lookup order (existing ones only, no repeats)."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    candidates = [Path(p) / "share" / PACKAGE / "models" for p in (*prefixes, sys.prefix)]
    candidates.append(Path(__file__).resolve().parents[1] / "models")  # a source checkout
    out: list[Path] = []
    for c in candidates:
        if c.is_dir() and c.resolve() not in [o.resolve() for o in out]:
            out.append(c)
    return out


def installed_models() -> list[str]:
    return sorted({d.name for root in model_dirs() for d in root.iterdir() if (d / "spec.json").is_file()})


def resolve_model(name_or_path: str) -> str:
    """An existing path as given; else the first installed model of that name (ValueError if none)."""
    if Path(name_or_path).expanduser().exists():
        return str(Path(name_or_path).expanduser())
    for root in model_dirs():
        if (root / name_or_path / "spec.json").is_file():
            return str(root / name_or_path)
    raise ValueError(
        f"model {name_or_path!r} is neither a path nor an installed model; installed: {installed_models()} "
        f"(looked in {[str(d) for d in model_dirs()]})"
    )

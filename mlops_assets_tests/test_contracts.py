"""The rules of the house, enforced: import contracts (import-linter) over every package, and ruff.

``make test`` runs both before the suite (``make lint``); these tests keep the contracts themselves
honest: every package of the platform is under the house rule and in a layer, so a new package
cannot slip past them.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
APPS = {"defs", "definitions", "cli", "cli_common", "cli_serve", "backup", "__main__"}


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _platform_packages() -> set[str]:
    package = ROOT / "mlops_assets"
    names = {p.name for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    names |= {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    return {f"mlops_assets.{n}" for n in names}


def test_every_package_but_the_dagster_layer_is_under_the_house_rule() -> None:
    house = next(c for c in _contracts() if "dagster" in c.get("forbidden_modules", []) and
                 "mlops_assets.data" in c.get("source_modules", []))
    expected = {p for p in _platform_packages() if p.split(".")[1] not in {"defs", "definitions"}}
    assert expected <= set(house["source_modules"]), expected - set(house["source_modules"])


def test_every_domain_package_is_in_a_layer() -> None:
    layers = next(c for c in _contracts() if c["type"] == "layers")
    layered = {name.strip() for layer in layers["layers"] for name in layer.split("|")}
    domain = {p for p in _platform_packages() if p.split(".")[1] not in APPS}
    assert domain <= layered, domain - layered


def test_the_import_contracts_hold() -> None:
    result = subprocess.run([str(BIN / "lint-imports")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "0 broken" in result.stdout


def test_ruff_is_clean() -> None:
    result = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]

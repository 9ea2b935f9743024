"""A command that needs a library only an extra installs says which extra, in one line."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import packages_distributions, requires

from peerwatt.cli import EXTRA_OF_MODULE

RUNTIME_EXTRAS = {"node", "dashboard", "reports", "demo"}


def _extra_requirements() -> dict[str, set[str]]:
    """distribution -> the runtime extras that list it (and not the base install)."""
    base, extras = set(), {}
    for requirement in requires("peerwatt") or []:
        dist = re.split(r"[ <>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        marker = re.search(r'extra == "(\w+)"', requirement)
        if dist == "peerwatt":
            continue
        if marker is None:
            base.add(dist)
        elif marker.group(1) in RUNTIME_EXTRAS:
            extras.setdefault(dist, set()).add(marker.group(1))
    return {d: e for d, e in extras.items() if d not in base}


def test_every_module_of_an_extra_names_an_extra_that_installs_it():
    modules: dict[str, set[str]] = {}
    for module, dists in packages_distributions().items():
        for dist in dists:
            modules.setdefault(dist.lower().replace("_", "-"), set()).add(module)
    for dist, extras in _extra_requirements().items():
        for module in modules[dist] - {m for m in modules[dist] if m.startswith("_")}:
            assert EXTRA_OF_MODULE.get(module) in extras, (module, dist, extras)


def test_a_missing_extra_is_one_line_naming_it(tmp_path):
    """Found in a QA pass: `peerwatt statements` on a node installed as peerwatt[node] (without
    fpdf2) ended in a ModuleNotFoundError traceback. Here pandas is taken away from `report`."""
    code = "import sys; sys.modules['pandas'] = None; from peerwatt.cli import main; main(sys.argv[1:])"
    r = subprocess.run(
        [sys.executable, "-c", code, "report", "--data", str(tmp_path), "--out", str(tmp_path / "r.csv")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stderr == (
        "error: this command needs pandas, which peerwatt's [reports] extra installs: "
        "pip install 'peerwatt[reports]'\n"
    )

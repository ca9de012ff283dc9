"""The dependency direction in the README's architecture section, as import contracts.

The contracts live in ``.importlinter``; import-linter reads every import statement, those
inside functions too, so a lazy import that would pull torch into a web process breaks them.
"""

import configparser
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_DIR


def test_the_import_contracts_hold():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_module_of_the_project_package_is_held_to_importing_no_app():
    # imagerec/ holds configuration only; a module added there later is covered by the
    # contract from the start, or named here with the reason it may import apps.
    config = configparser.ConfigParser()
    config.read(PROJECT_DIR / ".importlinter")
    covered = set(config["importlinter:contract:shared-below-apps"]["source_modules"].split())
    may_import_apps = {"imagerec.urls"}  # the URLconf includes the apps' URLconfs
    package = PROJECT_DIR / "imagerec"
    modules = {
        "imagerec." + (path.parent.name if path.name == "__init__.py" else path.stem)
        for path in [*package.glob("*.py"), *package.glob("*/__init__.py")]
        if path.name != "__init__.py" or path.parent != package
    }
    assert modules - may_import_apps <= covered, sorted(modules - may_import_apps - covered)

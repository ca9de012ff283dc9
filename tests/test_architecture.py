"""The dependency direction in the README's architecture section, as import contracts.

The contracts live in ``.importlinter``; import-linter reads every import statement, those
inside functions too, so a lazy import that would pull torch into a web process breaks them.
"""

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

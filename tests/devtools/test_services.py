"""The embedded servers start only when asked, and hand their URLs (and make run's choices) to manage.py."""

import subprocess
import sys

import pytest

from devtools import services
from tests.conftest import PROJECT_DIR


def test_the_env_file_keeps_your_own_lines_around_each_owners_block(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("# mine\nEMBEDDING_BATCH_SIZE=8\n")

    services.env_file_block_write("a tool", {"DATABASE_URL": "postgres://one"}, env_file)
    services.env_file_block_write("a tool", {"DATABASE_URL": "postgres://two"}, env_file)
    services.env_file_block_write("another", {"EMBEDDING_WEIGHTS": "random"}, env_file)

    assert services.env_file_values(env_file) == {
        "EMBEDDING_BATCH_SIZE": "8",
        "DATABASE_URL": "postgres://two",
        "EMBEDDING_WEIGHTS": "random",
    }
    assert services.env_file_values(env_file, outside="a tool") == {
        "EMBEDDING_BATCH_SIZE": "8",
        "EMBEDDING_WEIGHTS": "random",
    }
    services.env_file_block_write("a tool", {}, env_file)
    assert env_file.read_text().startswith("# mine\nEMBEDDING_BATCH_SIZE=8\n")
    assert "postgres://" not in env_file.read_text()


@pytest.mark.end_to_end
def test_manage_py_by_hand_finds_the_servers_and_the_weights_make_run_chose(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "IMAGEREC_DATA_DIR": str(tmp_path / "data"),
        "IMAGEREC_ENV_FILE": str(tmp_path / ".env"),
        "TORCH_HOME": str(tmp_path / "torch"),  # no ImageNet weights here: make run picks random ones
    }

    def run(*command):
        return subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=180)

    started = run(sys.executable, "-m", "devtools.services", "start")
    try:
        assert started.returncode == 0, started.stderr
        chose = run(
            sys.executable, "-c",
            "from devtools import services; from devtools.run import RUN_BLOCK, weights_choice; "
            "services.env_file_block_write(RUN_BLOCK, weights_choice({}))",
        )
        assert chose.returncode == 0, chose.stderr

        check = run(sys.executable, "manage.py", "check")
        read = run(sys.executable, "manage.py", "shell", "-c", "from django.conf import settings; from django.db import connection; connection.ensure_connection(); print(settings.EMBEDDING_WEIGHTS)")
    finally:
        stopped = run(sys.executable, "-m", "devtools.services", "stop")

    assert check.returncode == 0 and "similarity.W001" not in check.stdout + check.stderr
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip().splitlines()[-1] == "random"
    assert "PostgreSQL stopped" in stopped.stdout and "Redis stopped" in stopped.stdout
    assert "DATABASE_URL" not in (tmp_path / ".env").read_text()  # gone with the servers

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MUSC = REPO.parent / "shared" / "data" / "musc-sample"


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the installed `alpo` command the way a user does."""
    proc = subprocess.run(
        [sys.executable, "-m", "alpo_cli", *args], capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"alpo {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cli():
    return run_cli

"""`pip install ./client` gives a working package and `fmugw` command on its own.

The rest of the suite imports the client from client/src; this test builds and installs
it into a throwaway venv the way a user would, but offline: no build isolation (the
backend, flit_core, is pinned in requirements-dev.txt) and no dependency downloads
(requests comes from the suite's own environment through a .pth file).
"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
from pathlib import Path

CLIENT_DIR = Path(__file__).resolve().parents[1]


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


def test_pip_install_of_the_client_directory_works(tmp_path):
    source = tmp_path / "client"
    shutil.copytree(CLIENT_DIR, source, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    venv_site = Path(
        run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip()
    )
    (venv_site / "suite-packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    run(python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", source)

    installed = run(
        python, "-c", "import fmugateway_client as c; print(c.__file__); print(c.__version__)"
    ).stdout.split()
    assert Path(installed[0]).is_relative_to(venv_site)  # the installed copy, not client/src
    assert (venv_site / "fmugateway_client" / "py.typed").exists()
    help_text = run(venv / "bin" / "fmugw", "--help").stdout
    assert "usage: fmugw" in help_text
    for command in ("login", "upload", "models", "run", "result", "account"):
        assert command in help_text
    assert run(venv / "bin" / "fmugw", "--version").stdout.strip() == f"fmugw {installed[1]}"

"""The environment the README installs is the locked one that made the committed results."""

import re
import sysconfig
from importlib import metadata

from conftest import ROOT


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_the_readme_and_ci_install_with_the_lock():
    command = 'pip install -e ".[dev]" -c requirements.lock'
    assert command in (ROOT / "README.md").read_text() and command in (ROOT / ".ci/run").read_text()


def test_the_installed_packages_are_the_locked_versions():
    """Run the README's install command if this fails: other versions give other numbers."""
    pins = locked()
    assert {"torch", "torchvision", "kornia", "dvc", "mlflow", "clean-fid", "numpy", "pillow"} <= set(pins)
    wrong = {}
    # what pip installed, not what else is on sys.path: importing setuptools adds its _vendor folder,
    # with older zipp, platformdirs and importlib-metadata, for the rest of the process
    installed = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    for dist in metadata.distributions(path=installed):
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        have = dist.version.split("+")[0]  # 2.13.0+cpu is torch==2.13.0
        if name in pins and have != pins[name]:
            wrong[name] = (have, pins[name])
    assert not wrong, f"installed vs locked: {wrong}"

"""The wheel built from the repository holds every module, and works installed without -e."""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("alexnet_tf", "pipelines")


def _source_modules():
    """Every module of the packages in the source tree, as dotted names."""
    modules = set()
    for package in PACKAGES:
        for folder, subfolders, files in os.walk(os.path.join(REPO, package)):
            subfolders[:] = [name for name in subfolders if name != "__pycache__"]
            for name in files:
                if name.endswith(".py"):
                    relative = os.path.relpath(os.path.join(folder, name[:-3]), REPO)
                    modules.add(relative.replace(os.sep, ".").removesuffix(".__init__"))
    return modules


@pytest.mark.slow
def test_wheel_holds_every_module_and_imports_installed(tmp_path):
    # Built from a copy without build artefacts: setuptools reuses an in-tree build/ folder, whose
    # stale modules (say, one since moved) would otherwise end up in the wheel.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "runs", "data", ".venv"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), str(source)],
                   check=True, cwd=tmp_path, timeout=600)
    (wheel,) = [name for name in os.listdir(tmp_path) if name.endswith(".whl")]
    with zipfile.ZipFile(tmp_path / wheel) as archive:
        names = archive.namelist()
    in_wheel = {name[:-3].replace("/", ".").removesuffix(".__init__") for name in names
                if name.endswith(".py") and name.split("/")[0] in PACKAGES}
    expected = _source_modules()
    assert len(expected) > 40 and {"alexnet_tf.model.layers", "pipelines.conversion.worker"} <= expected
    assert in_wheel == expected, f"missing: {sorted(expected - in_wheel)}; extra: {sorted(in_wheel - expected)}"
    assert any(name.endswith(".dist-info/licenses/LICENSE") or name.endswith(".dist-info/LICENSE")
               for name in names), names

    # Installed without -e into a folder of its own: every module is found there (not in the
    # repository), and the public names import.
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site),
                    str(tmp_path / wheel)], check=True, cwd=tmp_path, timeout=600)
    check = (
        "import importlib.util, sys\n"
        f"modules = {sorted(expected)!r}\n"
        "import alexnet_tf, pipelines\n"
        "from alexnet_tf import build_alexnet, LocalResponseNormalization, load_caffe_npy\n"
        "from pipelines import build_dataset, augment\n"
        "for name in modules:\n"
        "    spec = importlib.util.find_spec(name)\n"
        "    assert spec is not None and spec.origin.startswith(sys.argv[1]), (name, spec)\n"
        "print('all', len(modules), 'modules from the wheel')\n")
    result = subprocess.run([sys.executable, "-c", check, str(site)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"all {len(expected)} modules from the wheel" in result.stdout

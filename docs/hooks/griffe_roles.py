"""Griffe extension for the API pages: the package's docstrings use Sphinx roles (``:func:`x```, ``:mod:`.y```) and
reST literal blocks (``e.g.::``); Markdown shows them as code spans and a plain colon."""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:mod|func|class|meth|data|attr|obj|exc):`~?\.*([^`]+)`")


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            text = ROLE.sub(r"``\1``", obj.docstring.value)
            obj.docstring.value = re.sub(r"(\S)::$", r"\1:", text, flags=re.MULTILINE)

"""Sphinx configuration for the single_session documentation.

Build with warnings as errors, as CI does::

    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import typing as t
from pathlib import Path

from docutils import nodes
from pallets_sphinx_themes import get_version
from pallets_sphinx_themes import ProjectLink
from sphinx.directives.other import Include
from sphinx.directives.patches import Figure
from sphinx.util import logging
from sphinx.util.nodes import nested_parse_with_titles

if t.TYPE_CHECKING:
    from sphinx.application import Sphinx
    from sphinx.environment import BuildEnvironment

# Project --------------------------------------------------------------

project = "single_session"
copyright = "2025 single_session developers"
author = "single_session developers"
release, version = get_version("single-session")

# General --------------------------------------------------------------

master_doc = "index"
default_role = "code"
extensions = [
    "sphinx.ext.autodoc",
    "sphinx_click",
    "myst_parser",
    "pallets_sphinx_themes",
]
# reST pages only. Markdown (the benchmark table, CHANGES.md) comes in through
# the include-if-exists directive below, parsed by MyST.
source_suffix = {".rst": "restructuredtext"}
exclude_patterns = ["_build", "screenshots"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_preserve_defaults = True
# Included Markdown files are fragments of a page: they may start at "##", and
# a relative link to a file that is not a page (raw results) stays plain text.
suppress_warnings = ["myst.header", "myst.xref_missing"]

# HTML -----------------------------------------------------------------

html_theme = "flask"
html_theme_options = {"index_sidebar_logo": False}
html_context = {
    "project_links": [
        ProjectLink("PyPI Releases", "https://pypi.org/project/single-session/"),
        ProjectLink("Source Code", "https://github.com/single-session/single_session/"),
        ProjectLink(
            "Issue Tracker", "https://github.com/single-session/single_session/issues/"
        ),
    ]
}
html_sidebars = {
    "index": ["project.html", "localtoc.html", "searchbox.html"],
    "**": ["localtoc.html", "relations.html", "searchbox.html"],
}
singlehtml_sidebars = {"index": ["project.html", "localtoc.html"]}
html_title = f"single_session Documentation ({version})"
html_show_sourcelink = False

# Local extensions -----------------------------------------------------

logger = logging.getLogger(__name__)


class IncludeIfExists(Include):
    """``.. include-if-exists:: path`` includes ``path`` exactly as
    ``.. include::`` does (same options, e.g. ``:parser: myst_parser.sphinx_``)
    when the file exists; otherwise it renders the directive's own content.

    Some included files are written by other tools (the benchmark table) or
    may not exist yet (the change log): the build must pass either way. A
    missing file is recorded as a dependency, so an incremental build reads
    the page again until the file appears.
    """

    has_content = True

    def run(self) -> list[nodes.Node]:
        _, path = self.env.relfn2path(self.arguments[0])
        if not Path(path).is_file():
            self.env.note_dependency(path)
            container = nodes.Element()
            nested_parse_with_titles(
                self.state, self.content, container, self.content_offset
            )
            return list(container.children)
        result = super().run()
        # Images in the included file are relative to that file, not to the page.
        base = Path(path).parent
        page_dir = Path(self.env.doc2path(self.env.docname)).parent
        for top in result:
            if not isinstance(top, nodes.Element):
                continue
            for image in top.findall(nodes.image):
                uri = image["uri"]
                if "://" not in uri and not uri.startswith(("/", "data:")):
                    image["uri"] = os.path.relpath(base / uri, page_dir)
        return result


class FigureIfExists(Figure):
    """``.. figure-if-exists:: path`` is ``.. figure::`` when the image exists,
    and nothing otherwise. The screenshots in ``docs/screenshots/`` are made by
    the demo's end-to-end test; a renamed or missing one must not break the
    build."""

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        _, path = env.relfn2path(self.arguments[0])
        if not Path(path).is_file():
            env.note_dependency(path)
            return []
        return super().run()


def check_public_api(app: Sphinx, env: BuildEnvironment) -> None:
    """Warn (an error under ``-W``) about any name in ``single_session.__all__``
    that the API page does not document."""
    import single_session

    documented = env.get_domain("py").objects
    for name in single_session.__all__:
        if f"single_session.{name}" not in documented:
            logger.warning(
                "single_session.%s is in __all__ but not documented in api.rst",
                name,
            )


def signal_docstring(
    app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    """A signal is a blinker object whose docstring is blinker's own: document
    it with the ``#:`` comment above its definition in ``single_session.signals``."""
    from blinker import NamedSignal
    from sphinx.pycode import ModuleAnalyzer

    if what != "data" or not isinstance(obj, NamedSignal):
        return
    attr_docs = ModuleAnalyzer.for_module("single_session.signals").find_attr_docs()
    comment = attr_docs.get(("", name.rsplit(".", 1)[-1]))
    if comment is None:
        logger.warning("signal %s has no #: comment in single_session.signals", name)
        return
    lines[:] = list(comment)


def setup(app: Sphinx) -> None:
    app.add_directive("include-if-exists", IncludeIfExists)
    app.add_directive("figure-if-exists", FigureIfExists)
    app.connect("autodoc-process-docstring", signal_docstring)
    app.connect("env-check-consistency", check_public_api)

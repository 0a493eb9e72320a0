"""The README's result tables, generated from the ledger's records: what `keras-okd ledger table` and `keras-okd
ledger readme` do.

A README block is the text between `<!-- ledger: PATH [PATH...] -->` and `<!-- /ledger -->`; it must equal the report's
table (`keras_okd.experiments.report`) of the records (`keras_okd.experiments.ledger`) under its paths.
tests/test_readme_ledger.py fails when a README table differs from what the ledger gives, so no figure is typed.
"""

import os
import re

from keras_okd.experiments.ledger import LedgerError, find_records
from keras_okd.experiments.report import build_groups, markdown_table, paired_to_independent, runs_from
from keras_okd.experiments.state import atomic_write

_MARKER = re.compile(r"(<!-- ledger: (?P<paths>[^>]*?) -->\n)(?P<body>.*?)(<!-- /ledger -->)", re.S)


def table(paths):
    """The report's Markdown table (`keras_okd.experiments.report.markdown_table`) of the records under `paths`."""
    runs, problems = runs_from(paths)
    if problems:
        raise LedgerError("; ".join(problems))
    groups = build_groups(runs)
    return markdown_table(groups, {id(g): paired_to_independent(groups, g) for g in groups})


def readme_blocks(text, root="."):
    """`[(paths, current body, generated body)]` for each `<!-- ledger: PATH [PATH...] -->` block of a README."""
    blocks = []
    for match in _MARKER.finditer(text):
        paths = [os.path.join(root, p) for p in match.group("paths").split()]
        if not find_records(paths):
            raise LedgerError(f"README marker <!-- ledger: {match.group('paths')} --> names no ledger records.")
        blocks.append((match.group("paths"), match.group("body"), table(paths) + "\n"))
    return blocks


def update_readme(path):
    """Rewrite every ledger block of the README at `path` from the records; returns the number of blocks changed.

    Example:

    ```python
    update_readme("README.md")     # what `keras-okd ledger readme README.md` does
    ```
    """
    with open(path) as f:
        text = f.read()
    root = os.path.dirname(os.path.abspath(path))
    generated = iter([body for _, _, body in readme_blocks(text, root)])
    changed = [0]

    def replace(match):
        body = next(generated)
        changed[0] += body != match.group("body")
        return match.group(1) + body + match.group(4)

    new = _MARKER.sub(replace, text)
    if new != text:
        atomic_write(path, new)
    return changed[0]

"""The README's result tables are generated from the committed ledger records (keras_okd.experiments.readme_tables):
every `<!-- ledger: PATH -->` block must equal what `keras-okd ledger table PATH` gives, so no figure is typed by
hand. Refresh them with `keras-okd ledger readme README.md`."""

import os

from keras_okd.experiments import readme_tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_readme_table_equals_its_ledger_records():
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = readme_tables.readme_blocks(f.read(), ROOT)
    assert blocks, "the README has no ledger table"
    stale = [paths for paths, body, generated in blocks if body != generated]
    assert not stale, f"README tables differ from their records (run `keras-okd ledger readme README.md`): {stale}"

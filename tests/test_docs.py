"""Docs generated from code stay true: the model and encoder tables of docs/models.md."""

import pytest

from zoo import docs


class Cited:
    """A model.

    Reference:
        Doe et al., "A Net", CONF 2020.
        - Second entry, ignored.
    """


def test_reference_is_read_from_the_docstring():
    assert docs.reference(Cited) == 'Doe et al., "A Net", CONF 2020.'
    assert docs.reference(object) == ""


def test_render_replaces_only_between_markers():
    text = "a\n<!-- zoo:t:start -->\nold\n<!-- zoo:t:end -->\nb\n"
    assert docs.render(text, "t", "new") == "a\n<!-- zoo:t:start -->\nnew\n<!-- zoo:t:end -->\nb\n"
    with pytest.raises(ValueError, match="markers"):
        docs.render("no markers", "t", "new")


@pytest.mark.parametrize(
    "name",
    # The encoders' table builds ~90 full-size encoders (shapes only): ~40 s (CI runs it).
    [pytest.param(n, marks=pytest.mark.slow) if n == "encoders" else n for n in docs.TABLES],
)
def test_docs_tables_are_up_to_date(name):
    # A new model or encoder file changes these tables: `python -m zoo.docs` regenerates them.
    file, make = docs.TABLES[name]
    text = (docs.DOCS / file).read_text()
    assert docs.render(text, name, make()) == text, f"run `python -m zoo.docs`: {name} table"

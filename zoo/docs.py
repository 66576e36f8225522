"""Tables in docs/ generated from the registries, so adding a model or an encoder edits no doc.

    python -m zoo.docs            # rewrite the tables in docs/models.md
    python -m zoo.docs --check    # exit 1 if they are out of date (the tests run this check)

Each table sits between `<!-- zoo:<name>:start -->` and `<!-- zoo:<name>:end -->` markers.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path

import zoo
from zoo import pretrained as pretrained_weights
from zoo.build_context import shapes_only

DOCS = Path(__file__).resolve().parents[1] / "docs"


def reference(obj: object) -> str:
    """The first entry of a docstring's `Reference:` section, on one line."""
    doc = inspect.getdoc(obj) or ""
    match = re.search(r"^Reference:\s*\n((?:[ \t]+\S.*\n?)+)", doc, re.M)
    if not match:
        return ""
    text = " ".join(line.strip() for line in match.group(1).splitlines())
    return text.lstrip("- ").split(" - ")[0]


def _count(model: object) -> str:
    return f"{model.count_params():,}"


def model_table() -> str:
    """Every registered model at its defaults with one class."""
    rows = [
        "| name | class | params | divisor | output stride | default encoder | paper |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in zoo.list_models():
        info = zoo.model_info(name)
        with shapes_only():
            model = zoo.create_model(name, num_classes=1)
        encoder = info.obj.arguments().get("encoder", "")
        rows.append(
            f"| `{name}` | {info.obj.__name__} | {_count(model)} | {model.divisor} | "
            f"{info.output_stride} | {encoder} | {reference(info.obj)} |"
        )
    return "\n".join(rows)


def _strides(strides: tuple[int, ...]) -> str:
    return f"{strides[0]}-{strides[-1]}" if len(strides) > 1 else f"{strides[0]} (plain)"


def encoder_table() -> str:
    """Every registered encoder at its defaults."""
    rows = [
        "| encoder | params | strides | output strides | pretrained | description |",
        "|---|---|---|---|---|---|",
    ]
    for name in zoo.list_encoders():
        info = zoo.encoder_info(name)
        # Encoders of an optional package are sized by their preset: nothing to count here.
        params = "(its preset's)"
        if not info.metadata.get("requires"):
            with shapes_only():
                params = _count(zoo.create_encoder(name, input_shape=(None, None, 3)))
        outs = ", ".join(map(str, sorted(info.output_strides, reverse=True)))
        # "files": no published source, but checkpoint files of its layout load (timm's ViTs).
        files = name in pretrained_weights._ENCODERS
        pretrained = "yes" if info.pretrained else "files" if files else "no"
        rows.append(
            f"| `{name}` | {params} | {_strides(info.strides)} | {outs} | {pretrained} | "
            f"{info.description} |"
        )
    return "\n".join(rows)


TABLES: dict[str, tuple[str, Callable[[], str]]] = {
    "models": ("models.md", model_table),
    "encoders": ("models.md", encoder_table),
}


def render(text: str, name: str, table: str) -> str:
    """`text` with the table between the `name` markers replaced by `table`."""
    start, end = f"<!-- zoo:{name}:start -->", f"<!-- zoo:{name}:end -->"
    if start not in text or end not in text:
        raise ValueError(f"markers {start} / {end} not found")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{table}\n{end}{tail}"


def update(check: bool = False) -> list[str]:
    """Regenerate every table; returns the files that changed (or would, with `check`)."""
    texts: dict[Path, str] = {}
    for name, (file, make) in TABLES.items():
        path = DOCS / file
        texts.setdefault(path, path.read_text())
        texts[path] = render(texts[path], name, make())
    changed = [str(p) for p, t in texts.items() if p.read_text() != t]
    if not check:
        for path, text in texts.items():
            path.write_text(text)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.docs", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report out-of-date tables")
    args = parser.parse_args(argv)
    changed = update(check=args.check)
    for path in changed:
        print(f"{'out of date' if args.check else 'updated'}: {path}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())

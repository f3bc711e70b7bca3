"""The comments of config/tables/*.yaml agree with the rows they describe: what a comment calls
"not implemented here" is a `run: false` row of a method the catalogue does not have; a file whose
header says its rows end with the methods not implemented here runs no row after them unless a
comment there says so; a `run: false` row of an implemented method has a comment saying why it is
not run. Reads the YAML files' text and the config: seconds."""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import REPO
from semiseg.config import load_config

FILES = sorted((REPO / "config" / "tables").glob("*.yaml"))
#: A header that says the rows end with the methods not implemented here.
ENDS_WITH_NOT_IMPLEMENTED = re.compile(r"then\s+(?:the\s+)?methods\s+not\s+implemented\s+here")


@pytest.fixture(scope="module")
def methods() -> set[str]:
    return set(load_config(root=REPO)["methods"])


def _tables(path):
    """Per table of the file: its name and its rows, each with the comment written in the rows
    list above its group of rows ('' where none: the comment lines since the previous row)."""
    out, pending, group = [], [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if re.match(r"^[A-Za-z0-9_]+:\s*$", line):
            out.append((line[:-1].strip(), []))
            pending, group = [], ""
        elif not out:
            continue
        elif re.match(r"^\s+#", line):
            pending.append(line.strip().lstrip("#").strip())
        elif re.match(r"^\s+- \{method:", line):
            if pending:
                group, pending = " ".join(pending), []
            out[-1][1].append((yaml.safe_load(line.strip()[2:]), group))
        elif re.match(r"^\s+[a-z_]+:", line):  # another key of the table: the rows list has ended
            pending, group = [], ""
    return out


def _header(path) -> str:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_comments_of_a_table_file_say_what_its_rows_run(path, methods):
    problems = []
    ends_with_not_implemented = bool(ENDS_WITH_NOT_IMPLEMENTED.search(_header(path)))
    for table, rows in _tables(path):
        seen_paper_only = False
        for row, comment in rows:
            runs = row.get("run", True)
            label = row.get("label", row["method"])
            if "not implemented" in comment and (runs or row["method"] in methods):
                problems.append(f"{table}: {label!r} is under the comment {comment!r} but "
                                f"{'runs' if runs else 'is implemented (config/methods/)'}")
            if ends_with_not_implemented and runs and seen_paper_only and (not comment or "not implemented" in comment):
                problems.append(f"{table}: {label!r} runs after the `run: false` rows, though the header says "
                                "the rows end with the methods not implemented here, and no comment above it says so")
            if not runs and row["method"] in methods and "not run" not in comment:
                problems.append(f"{table}: {label!r} is implemented (config/methods/) but `run: false`; "
                                "no comment above it says why it is not run")
            seen_paper_only |= not runs
    assert not problems, f"{path.name}:\n" + "\n".join(problems)

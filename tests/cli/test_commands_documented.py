"""Every CLI command has help text and is shown in the README (sqlite-utils' habit)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from ddr_search.cli.main import cli

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def all_commands(group: click.Group, prefix: str = "ddr-search") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((f"{prefix} {name}", command))
        if isinstance(command, click.Group):
            found.extend(all_commands(command, f"{prefix} {name}"))
    return found


@pytest.mark.parametrize(("path", "command"), all_commands(cli), ids=lambda v: v if isinstance(v, str) else "")
def test_command_has_help_and_is_in_the_readme(path, command):
    assert (command.help or "").strip(), f"`{path}` has no help text"
    words = path.split()[1:]
    shown = " ".join(words) in README or (len(words) > 2 and f"{words[-2]} {words[-1]}" in README)
    assert shown, f"`{path}` is not shown in README.md"

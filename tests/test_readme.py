"""The README's command lines name real commands and flags (``pseudo-labels <command> --flag``).

Inline code spans and code blocks are read; a flag is attributed to the last command name
before it on the same line (continuation lines joined). Underscore spellings count as the
hyphenated flag, as the commands accept both.
"""

from __future__ import annotations

import re
from pathlib import Path

from pseudo_labels.cli import COMMANDS, build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def command_flags(text: str) -> set[tuple[str, str]]:
    """(command, flag) pairs mentioned in ``text`` (markdown)."""
    blocks = [b.replace("\\\n", " ") for b in re.findall(r"```[^\n]*\n(.*?)```", text, re.S)]
    spans = re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S).replace("\n", " "))
    found = set()
    for line in "\n".join(blocks + spans).split("\n"):
        command = None
        for token in re.split(r"[\s|\[\]=(),`]+", line):
            if token in COMMANDS:
                command = token
            elif command and re.fullmatch(r"--[a-z][a-z0-9_-]*", token):
                found.add((command, token.replace("_", "-")))
    return found


def option_strings(command: str) -> set[str]:
    parser = build_parser(command)
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {s for a in sub._actions for s in a.option_strings}


def test_command_flags_parser_sees_what_the_text_says():
    pairs = command_flags("`pseudo-labels evaluate --protocol cups --no-such-flag` and\n"
                          "```\npseudo-labels run --config p.toml \\\n    --print_config\n```\n")
    assert pairs == {("evaluate", "--protocol"), ("evaluate", "--no-such-flag"), ("run", "--config"),
                     ("run", "--print-config")}
    assert "--no-such-flag" not in option_strings("evaluate") and "--protocol" in option_strings("evaluate")


def test_every_flag_the_readme_names_exists():
    pairs = command_flags(README.read_text(encoding="utf-8"))
    assert len({c for c, _ in pairs}) >= 25  # the command table is read
    known: dict[str, set[str]] = {}
    missing = sorted((c, f) for c, f in pairs if f not in known.setdefault(c, option_strings(c)))
    assert not missing, missing

"""The command line's own surface: every option says what it is for, and --version answers."""

from __future__ import annotations

import argparse
import subprocess
import sys

from semiseg import __version__
from semiseg.cli import build_parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def test_every_option_of_every_stage_has_help_text():
    parser = build_parser()
    missing = [f"semiseg {name} {'/'.join(action.option_strings) or action.dest}"
               for name, sub in {"": parser, **_subparsers(parser)}.items()
               for action in sub._actions
               if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) and not action.help]
    assert missing == []


def test_version_prints_the_package_version():
    proc = subprocess.run([sys.executable, "-m", "semiseg.cli", "--version"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"semiseg {__version__}"

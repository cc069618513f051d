"""The ``lookalike`` command: a thin layer over ``Library``; every command maps to one library call.

Each module registers its commands on ``app`` when imported, in the order ``lookalike --help`` lists them (hence
the imports kept in that order).
"""

# isort: off
from lookalike.cli import indexing, searching, editing, upkeep, service  # noqa: F401 - registers the commands
from lookalike.cli.app import app, run
from lookalike.cli.progress import LogProgress
# isort: on

__all__ = ["LogProgress", "app", "run"]

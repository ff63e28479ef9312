"""`faceproof eval ...`: accuracy evaluations."""

from __future__ import annotations

import typer

eval_app = typer.Typer(help="Evaluate accuracy on labelled data.", no_args_is_help=True)

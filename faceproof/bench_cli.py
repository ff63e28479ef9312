"""`faceproof bench ...`: speed benchmarks that print numbers (JSON with --json)."""

from __future__ import annotations

import typer

bench_app = typer.Typer(help="Benchmarks (not tests): print numbers, JSON with --json.", no_args_is_help=True)

"""`python -m dfkd_bench ...`: the CLI (what torchrun starts in each process)."""

from .cli import main

main()

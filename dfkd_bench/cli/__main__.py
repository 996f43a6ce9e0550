"""`python -m dfkd_bench.cli`: the same entry point as `dfkd-bench`."""

from . import main

main()

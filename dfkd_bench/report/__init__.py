"""Reports from results files: tables (and plots); imports no torch."""

from .tables import read_runs_csv, runs_frame, summarize, to_markdown

__all__ = ["read_runs_csv", "runs_frame", "summarize", "to_markdown"]

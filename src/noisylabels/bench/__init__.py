"""Benchmark suites: grids of runs with tables beside reference numbers."""

from .harness import Cell, Suite, list_suites, load_suite, run_suite, tabulate

__all__ = ["Cell", "Suite", "list_suites", "load_suite", "run_suite", "tabulate"]

"""Benchmark suites: grids of runs with tables beside reference numbers."""

from .harness import (EXECUTORS, Cell, ReferenceBlock, Suite, config_hash, list_suites, load_suite, run_suite,
                      tabulate)

__all__ = ["EXECUTORS", "Cell", "ReferenceBlock", "Suite", "config_hash", "list_suites", "load_suite", "run_suite",
           "tabulate"]

"""Command-line fronts over `cnn_cases.perf` (run as `python scripts/NAME.py`)."""

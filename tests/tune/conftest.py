"""Tuning tests: this folder is on sys.path (pytest's rootdir conftest rule), so planted_tune imports."""

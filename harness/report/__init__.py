"""Reporting a run: the terminal verdict table and the self-contained report.html."""

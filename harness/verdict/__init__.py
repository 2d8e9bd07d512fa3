"""The verdict: SLO files, percentiles with confidence intervals, every planned arrival accounted for, and
the one typed results model (results.json) that the terminal and the report read."""

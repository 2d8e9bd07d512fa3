"""The verdict: SLO files, their checks against a run's figures, and the run's validity."""

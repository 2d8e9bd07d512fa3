"""Run against baseline: each percentile's change per region and PoP with a bootstrap confidence interval,
and a verdict (regressed / improved / no significant change) against stated tolerances."""

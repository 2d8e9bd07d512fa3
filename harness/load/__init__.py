"""Geographic load generation: regions, profiles, open-model arrivals, recording and the run itself."""

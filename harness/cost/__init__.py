"""What a run's traffic would cost: pricing plans from a YAML file applied to the requests and server time
each region measured."""

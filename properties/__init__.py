"""ditcheck.properties: Hypothesis strategies and property functions comparing implementations to the reference."""

"""The benchmark parts a–e, one module each (registered in `benchmarks.suite.PARTS`)."""

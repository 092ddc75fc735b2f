"""Tools that make data: the synthetic capture generator (`npga synth`)."""

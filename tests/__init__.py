"""The test suite. A package, so that its helpers import by one name (`tests.helpers...`) from pytest's own
runs, from `benchmarks/mutants.py`'s copies and from scripts alike, not through pytest's sys.path insertions."""

"""Benchmarks: run each as `python -m bench.NAME` from the project root (as a module, so that
`bench/select.py` does not shadow the standard `select` module). Each prints ratios measured in
one run and ends with a `RESULT …` line."""

"""Side-by-side speed runs of jaxrobust against the libraries people use today.

Each benchmark runs the reference and jaxrobust on the same data in one process and
reports throughput and their ratio; `benchmarks/` holds thin scripts that call these.
"""

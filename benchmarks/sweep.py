"""Sweep benchmark: see `jaxrobust.bench.sweep` (also `jaxrobust bench sweep`)."""

from jaxrobust.bench.sweep import main

if __name__ == "__main__":
    main()

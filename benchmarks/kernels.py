"""Kernel benchmark: see `jaxrobust.bench.kernels` (also `jaxrobust bench kernels`)."""

from jaxrobust.bench.kernels import main

if __name__ == "__main__":
    main()

"""Scale benchmark: see `jaxrobust.bench.scale` (also `jaxrobust bench scale`)."""

from jaxrobust.bench.scale import main

if __name__ == "__main__":
    main()

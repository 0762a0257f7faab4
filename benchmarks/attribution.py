"""Attribution benchmark: see `jaxrobust.bench.attribution` (also `jaxrobust bench attribution`)."""

from jaxrobust.bench.attribution import main

if __name__ == "__main__":
    main()

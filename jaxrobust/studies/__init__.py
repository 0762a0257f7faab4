"""The application layer: whole jobs built from the pure-JAX core.

- `corruption`: the corruption study, the main job (`jaxrobust run`, `train`,
  `sweep`);
- `counterfactual`: the attribution study (`jaxrobust counterfactual`);
- `kernels`: the kernel protocol on a bundled photograph and the corruption gallery
  (`jaxrobust kernels-demo`, `jaxrobust corruptions --gallery`);
- `attribute`: attributions of a checkpoint (`jaxrobust attribute`);
- `timing`: attribution and sweep cost on a checkpoint (`jaxrobust bench`);
- `folder`: the run folder's record (one config's results per folder).

Each job is a function of a config and an output folder; the figures and HTML are
`jaxrobust.report`'s, files appear through `jaxrobust._io`.
"""

"""Attribution benchmark: jaxrobust IG against Captum, against its own floor, and
its completeness error against the number of steps.

One small CNN is built in Flax and copied into PyTorch (same weights). For each
(steps, batch): jaxrobust `integrated_gradients` (jit, warmed up), Captum
`IntegratedGradients` (same method, steps, black baseline, targets, all steps in one
batch), and the floor: one jitted forward+backward over `steps x batch` images of the
same model. Also the completeness error `|sum IG - (f(x) - f(b))|` for every rule
and a memory run (steps 256 x batch 64 at 174x174, chunked automatically).

Run: `python benchmarks/attribution.py` or `jaxrobust bench attribution`.
"""

from __future__ import annotations

import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import attribution, models
from jaxrobust.bench.common import (
    bench_parser,
    device_info,
    parse,
    print_table,
    save,
    time_call,
)


def torch_twin(net):
    """A PyTorch copy (same weights) of a Flax `small_cnn` classifier, NCHW input."""
    import torch

    b = net.backbone

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(b.in_channels, b.conv1.out_features, 3, padding=1)
            self.conv2 = torch.nn.Conv2d(b.conv1.out_features, b.conv2.out_features, 3,
                                         padding=1)
            self.fc1 = torch.nn.Linear(net.hidden.in_features, net.hidden.out_features)
            self.fc2 = torch.nn.Linear(net.hidden.out_features, net.logits.out_features)

        def forward(self, x):
            pool = torch.nn.functional.max_pool2d
            x = pool(torch.relu(self.conv1(x)), 2)
            x = pool(torch.relu(self.conv2(x)), 2)
            x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
            return self.fc2(torch.relu(self.fc1(x)))

    twin = Twin()
    with torch.no_grad():
        for conv, ref in ((twin.conv1, b.conv1), (twin.conv2, b.conv2)):
            conv.weight.copy_(torch.from_numpy(np.asarray(ref.kernel[...]).transpose(3, 2, 0, 1)))
            conv.bias.copy_(torch.from_numpy(np.asarray(ref.bias[...])))
        for lin, ref in ((twin.fc1, net.hidden), (twin.fc2, net.logits)):
            lin.weight.copy_(torch.from_numpy(np.asarray(ref.kernel[...]).T))
            lin.bias.copy_(torch.from_numpy(np.asarray(ref.bias[...])))
    return twin.eval()


def _row(apply_fn, params, ig_torch, x, targets, steps: int, method: str) -> dict:
    """Times one (steps, batch) three ways and compares jaxrobust with Captum."""
    import torch

    ours_fn = jax.jit(lambda x, t: attribution.integrated_gradients(
        apply_fn, params, x, t, steps=steps, method=method))
    start = time.perf_counter()
    ours = np.asarray(jax.block_until_ready(ours_fn(x, targets)))
    compile_s = time.perf_counter() - start
    ours_s = time_call(lambda: jax.block_until_ready(ours_fn(x, targets)), repeats=3)

    big, big_t = np.repeat(x, steps, axis=0), np.tile(targets, steps)
    floor_fn = jax.jit(lambda x, t: attribution._target_grad(apply_fn, params, x, t))
    jax.block_until_ready(floor_fn(big, big_t))
    floor_s = time_call(lambda: jax.block_until_ready(floor_fn(big, big_t)), repeats=3)

    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    tt = torch.from_numpy(targets).long()

    def captum():
        return ig_torch.attribute(xt, baselines=torch.zeros_like(xt), target=tt,
                                  n_steps=steps, method=method)

    theirs = captum().detach().numpy().transpose(0, 2, 3, 1)
    captum_s = time_call(captum, repeats=3)
    rel = float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-12))
    return {"steps": steps, "batch": len(x), "jaxrobust_s": ours_s, "floor_s": floor_s,
            "captum_s": captum_s, "ig_over_floor": ours_s / floor_s,
            "captum_over_ours": captum_s / ours_s, "max_rel_diff": rel, "compile_s": compile_s}


def run(steps_list=(16, 64, 256), batches=(1, 16, 64), size: int = 28, width: float = 0.5,
        method: str = "gausslegendre", memory_run: bool = True, log=print) -> dict:
    import torch
    from captum.attr import IntegratedGradients

    net = models.get("small_cnn", num_classes=10, input_shape=(size, size, 1), width=width,
                     hidden=64, seed=0)
    apply_fn, params = models.pure(net)
    twin = torch_twin(net)
    ig_torch = IntegratedGradients(twin)
    rng = np.random.default_rng(0)
    rows = []
    for batch in batches:
        x = rng.random((batch, size, size, 1), dtype=np.float32)
        targets = rng.integers(0, 10, batch)
        for steps in steps_list:
            rows.append(_row(apply_fn, params, ig_torch, x, targets, steps, method))
            r = rows[-1]
            log(f"  steps {steps:4d} batch {batch:3d}: ours {r['jaxrobust_s'] * 1e3:8.1f} ms, "
                f"floor {r['floor_s'] * 1e3:8.1f} ms (x{r['ig_over_floor']:.2f}), captum "
                f"{r['captum_s'] * 1e3:8.1f} ms (ours x{r['captum_over_ours']:.2f} faster), "
                f"rel diff {r['max_rel_diff']:.1e}")

    x = rng.random((8, size, size, 1), dtype=np.float32)
    targets = rng.integers(0, 10, 8)
    completeness = {}
    for m in attribution.METHODS:
        completeness[m] = {}
        for steps in (4, 8, 16, 32, 64, 128, 256):
            _, delta = attribution.integrated_gradients(apply_fn, params, x, targets,
                                                        steps=steps, method=m, return_delta=True)
            completeness[m][steps] = float(jnp.abs(delta).mean())
    memory = None
    if memory_run:
        big_net = models.get("small_cnn", num_classes=4, input_shape=(174, 174, 1), width=0.25,
                             hidden=32)
        f, p = models.pure(big_net)
        xb = rng.random((64, 174, 174, 1), dtype=np.float32)
        chunk = attribution.auto_chunk(256, 64, (174, 174, 1))
        start = time.perf_counter()
        out = attribution.integrated_gradients(f, p, xb, np.zeros(64, np.int32), steps=256)
        jax.block_until_ready(out)
        memory = {"steps": 256, "batch": 64, "shape": [174, 174, 1], "chunk_size": chunk,
                  "seconds": time.perf_counter() - start,
                  "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
        log(f"  memory run: 256 steps x 64 images of 174x174 in chunks of {chunk}: "
            f"{memory['seconds']:.0f} s, peak RSS {memory['peak_rss_gib']:.1f} GiB")
    return {"benchmark": "attribution", "device": device_info(), "method": method,
            "model": f"small_cnn width {width}, {size}x{size}x1, 10 classes",
            "torch": torch.__version__, "rows": rows, "completeness": completeness,
            "memory": memory, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def plot(payload: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for batch in sorted({r["batch"] for r in payload["rows"]}):
        rows = [r for r in payload["rows"] if r["batch"] == batch]
        s = [r["steps"] for r in rows]
        line, = a.plot(s, [r["jaxrobust_s"] for r in rows], "o-", label=f"jaxrobust, batch {batch}")
        a.plot(s, [r["captum_s"] for r in rows], "s--", color=line.get_color(),
               label=f"Captum, batch {batch}")
        a.plot(s, [r["floor_s"] for r in rows], ":", color=line.get_color())
    a.set_xscale("log", base=2)
    a.set_yscale("log")
    a.set_xlabel("steps")
    a.set_ylabel("seconds (dotted: forward+backward floor)")
    a.set_title("Integrated Gradients cost")
    a.legend(fontsize=7)
    for m, errs in payload["completeness"].items():
        steps = sorted(int(k) for k in errs)
        b.plot(steps, [max(errs[k] if k in errs else errs[str(k)], 1e-9) for k in steps], "o-",
               label=m)
    b.set_xscale("log", base=2)
    b.set_yscale("log")
    b.set_xlabel("steps")
    b.set_ylabel("mean |completeness error|")
    b.set_title("Completeness error by quadrature rule")
    b.legend(fontsize=7)
    for ax in (a, b):
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> dict:
    parser = bench_parser(__doc__)
    parser.add_argument("--steps", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--no-memory-run", action="store_true")
    parser.set_defaults(one_device=True)  # Captum and XLA each use the whole CPU
    args = parse(parser, argv)
    payload = run(tuple(args.steps), tuple(args.batches), memory_run=not args.no_memory_run)
    out = save(payload, "attribution", args.out)
    plot(payload, out.replace(".json", ".png"))
    print_table(payload["rows"], [
        ("steps", "steps", "{}"), ("batch", "batch", "{}"),
        ("jaxrobust_s", "jaxrobust s", "{:.4f}"), ("floor_s", "floor s", "{:.4f}"),
        ("ig_over_floor", "IG/floor", "{:.2f}"), ("captum_s", "Captum s", "{:.4f}"),
        ("captum_over_ours", "Captum/ours", "{:.2f}"), ("max_rel_diff", "rel diff", "{:.1e}"),
    ])
    print(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()

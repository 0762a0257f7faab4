"""Attribution benchmark: jaxrobust IG against Captum, against its own floor, and
its completeness error against the number of steps.

One small CNN is built in Flax and copied into PyTorch (same weights). For each
(steps, batch): jaxrobust `integrated_gradients` (jit, warmed up), Captum
`IntegratedGradients` (same method, steps, black baseline, targets, all steps in one
batch), and the floor: one jitted forward+backward over `steps x batch` images of the
same model. Also the completeness error `|sum IG - (f(x) - f(b))|` for every rule,
a memory run (steps 256 x batch 64 at 174x174, chunked automatically), and a
profile of the floor (convolutional backbone vs whole model, XLA vs PyTorch) with IG
vs Captum under each XLA CPU option worth trying (default, oneDNN, XNNPACK greedy
graph fusion), one process per option.

Run from the repository root: `python -m benchmarks.attribution`.
"""

from __future__ import annotations

import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import (
    ROOT,
    bench_parser,
    device_info,
    parse,
    print_table,
    save,
    time_call,
)
from jaxrobust import attribution, models


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
    ours_s = time_call(lambda: jax.block_until_ready(ours_fn(x, targets)), repeats=5,
                       min_time=0.5)

    big, big_t = np.repeat(x, steps, axis=0), np.tile(targets, steps)
    floor_fn = jax.jit(lambda x, t: attribution.saliency(apply_fn, params, x, t, absolute=False))
    jax.block_until_ready(floor_fn(big, big_t))
    floor_s = time_call(lambda: jax.block_until_ready(floor_fn(big, big_t)), repeats=5,
                        min_time=0.5)

    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    tt = torch.from_numpy(targets).long()

    def captum():
        return ig_torch.attribute(xt, baselines=torch.zeros_like(xt), target=tt,
                                  n_steps=steps, method=method)

    theirs = captum().detach().numpy().transpose(0, 2, 3, 1)
    captum_s = time_call(captum, repeats=5, min_time=0.5)
    rel = float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-12))
    return {"steps": steps, "batch": len(x), "jaxrobust_s": ours_s, "floor_s": floor_s,
            "captum_s": captum_s, "ig_over_floor": ours_s / floor_s,
            "captum_over_ours": captum_s / ours_s, "max_rel_diff": rel, "compile_s": compile_s}


def run(steps_list=(16, 64, 256), batches=(1, 16, 64), size: int = 28, width: float = 0.5,
        method: str = "gausslegendre", memory_run: bool = True, xla_runs: bool = True,
        log=print) -> dict:
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
    options = xla_options(log) if xla_runs else None
    return {"benchmark": "attribution", "device": device_info(), "method": method,
            "model": f"small_cnn width {width}, {size}x{size}x1, 10 classes",
            "torch": torch.__version__, "rows": rows, "completeness": completeness,
            "memory": memory, "xla_cpu_options": options,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}


def conv_profile(size: int = 28, width: float = 0.5, images: int = 1024) -> dict:
    """Where the floor's time goes: the convolutional part against the whole model.

    Times one forward+backward (gradient with respect to the input) over `images`
    images of the convolutional backbone alone and of the whole classifier, in XLA
    and in PyTorch, same weights and threads. If XLA's convolutions are what makes
    the floor slower than PyTorch's, the backbone rows show it.
    """
    import torch

    net = models.get("small_cnn", num_classes=10, input_shape=(size, size, 1), width=width,
                     hidden=64, seed=0)
    full_fn, full_p = models.pure(net)
    conv_fn, conv_p = models.pure(net.backbone)
    twin = torch_twin(net)
    x = np.random.default_rng(1).random((images, size, size, 1), dtype=np.float32)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    def jax_time(fn, p):
        g = jax.jit(jax.grad(lambda x: jnp.sum(fn(p, x))))
        jax.block_until_ready(g(x))
        return time_call(lambda: jax.block_until_ready(g(x)), repeats=5, min_time=1.0)

    def torch_backbone(x):
        pool = torch.nn.functional.max_pool2d
        x = pool(torch.relu(twin.conv1(x)), 2)
        return pool(torch.relu(twin.conv2(x)), 2)

    def torch_time(fn):
        def once():
            xi = xt.clone().requires_grad_(True)
            fn(xi).sum().backward()
        once()
        return time_call(once, repeats=5, min_time=1.0)

    out = {"images": images, "xla_backbone_s": jax_time(conv_fn, conv_p),
           "xla_model_s": jax_time(full_fn, full_p), "torch_backbone_s": torch_time(
               torch_backbone), "torch_model_s": torch_time(twin)}
    out["xla_backbone_share"] = out["xla_backbone_s"] / out["xla_model_s"]
    out["torch_backbone_share"] = out["torch_backbone_s"] / out["torch_model_s"]
    out["backbone_xla_over_torch"] = out["xla_backbone_s"] / out["torch_backbone_s"]
    out["model_xla_over_torch"] = out["xla_model_s"] / out["torch_model_s"]
    return out


XLA_OPTIONS = {
    "default": "",
    "onednn": "--xla_cpu_use_onednn=true",
    "xnn_greedy_fusion": "--xla_cpu_experimental_xnn_graph_fusion_mode="
                         "XNN_GRAPH_FUSION_MODE_GREEDY",
}

_OPTION_SCRIPT = """
import json, sys
from benchmarks.attribution import conv_profile, _ig_timing
out = conv_profile()
out.update(_ig_timing())
print("RESULT " + json.dumps(out))
"""


def _ig_timing(steps: int = 64, batch: int = 16, size: int = 28, width: float = 0.5) -> dict:
    """IG and Captum times for one (steps, batch), for the XLA-options comparison."""
    import torch
    from captum.attr import IntegratedGradients

    net = models.get("small_cnn", num_classes=10, input_shape=(size, size, 1), width=width,
                     hidden=64, seed=0)
    apply_fn, params = models.pure(net)
    rng = np.random.default_rng(0)
    x = rng.random((batch, size, size, 1), dtype=np.float32)
    targets = rng.integers(0, 10, batch)
    ig = jax.jit(lambda x, t: attribution.integrated_gradients(apply_fn, params, x, t,
                                                               steps=steps))
    jax.block_until_ready(ig(x, targets))
    ours = time_call(lambda: jax.block_until_ready(ig(x, targets)), repeats=5, min_time=1.0)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    tt = torch.from_numpy(targets).long()
    captum = IntegratedGradients(torch_twin(net))
    call = lambda: captum.attribute(xt, baselines=torch.zeros_like(xt), target=tt,
                                    n_steps=steps, method="gausslegendre")
    call()
    theirs = time_call(call, repeats=5, min_time=1.0)
    return {"ig_steps": steps, "ig_batch": batch, "ig_s": ours, "captum_s": theirs,
            "captum_over_ours": theirs / ours}


def xla_options(log=print) -> dict:
    """The floor profile and IG vs Captum under each of `XLA_OPTIONS`, one process each."""
    import json
    import os
    import subprocess
    import sys

    results = {}
    for name, flags in XLA_OPTIONS.items():
        env = dict(os.environ, XLA_FLAGS=flags)
        proc = subprocess.run([sys.executable, "-c", _OPTION_SCRIPT], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=1200)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            results[name] = {"flags": flags, "error": proc.stderr.strip().splitlines()[-1:]}
            log(f"  XLA options {name}: failed ({results[name]['error']})")
            continue
        results[name] = {"flags": flags, **json.loads(line[0][len("RESULT "):])}
        r = results[name]
        log(f"  XLA options {name:18s}: backbone fwd+bwd XLA/torch "
            f"x{r['backbone_xla_over_torch']:.2f} (backbone {r['xla_backbone_share']:.0%} of "
            f"XLA's model time), IG {r['ig_s'] * 1e3:.0f} ms, Captum/ours "
            f"x{r['captum_over_ours']:.2f}")
    return results


def _steps_axes(ax, ylabel: str, title: str) -> None:
    """Log-log axes over the number of IG steps."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("steps")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)


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
    _steps_axes(a, "seconds (dotted: forward+backward floor)", "Integrated Gradients cost")
    for m, errs in payload["completeness"].items():
        steps = sorted(int(k) for k in errs)
        b.plot(steps, [max(errs[k] if k in errs else errs[str(k)], 1e-9) for k in steps], "o-",
               label=m)
    _steps_axes(b, "mean |completeness error|", "Completeness error by quadrature rule")
    for ax in (a, b):
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> dict:
    parser = bench_parser(__doc__, "attribution")
    parser.add_argument("--steps", type=int, nargs="+", default=[16, 64, 256],
                        help="IG path steps to time")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64],
                        help="images per IG call to time")
    parser.add_argument("--no-memory-run", action="store_true",
                        help="skip the 256-step IG of 64 images at 174x174 (peak memory)")
    parser.add_argument("--no-xla-options", action="store_true",
                        help="skip the conv profile under each XLA CPU option")
    args = parse(parser, argv)
    payload = run(tuple(args.steps), tuple(args.batches), memory_run=not args.no_memory_run,
                  xla_runs=not args.no_xla_options)
    payload["setup"] = args.setup
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

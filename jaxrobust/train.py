"""Training with optax, checkpoints with orbax, and restoring a trained model.

A trained model lives in one folder: `model.json` (model name, options, class
names, input shape, config) and `checkpoints/<epoch>/` written by orbax after every
epoch. Training the same folder again resumes from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from jaxrobust import _io, _progress, models
from jaxrobust.config import ModelConfig, TrainConfig
from jaxrobust.models.keras_import import assign_keras_weights

METADATA = "model.json"


@dataclasses.dataclass
class TrainResult:
    """A trained classifier: `apply_fn(params, images) -> logits`, eval mode."""

    apply_fn: Callable
    params: object
    metadata: dict
    history: list[dict]


def _optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    if cfg.optimizer == "adam":
        return optax.adam(cfg.learning_rate)
    if cfg.optimizer == "sgd":
        return optax.sgd(cfg.learning_rate, momentum=0.9)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use adam or sgd.")


def _file_digest(path: str) -> str:
    """The first 16 hex digits of a file's SHA-256 (what a checkpoint records of it)."""
    import hashlib

    h = hashlib.sha256()
    with open(os.path.expanduser(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _build(meta: dict):
    return models.get(meta["model"], meta["num_classes"], input_shape=tuple(meta["input_shape"]),
                      width=meta["width"], hidden=meta["hidden"], seed=meta["seed"],
                      bn_momentum=meta.get("bn_momentum", 0.99),
                      preprocess=meta.get("preprocess", "none"))


def _pure(tree):
    return jax.tree.map(np.asarray, nnx.to_pure_dict(tree) if isinstance(tree, nnx.State)
                        else tree)


def _manager(model_dir: str) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        os.path.abspath(os.path.join(model_dir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True),
    )


def _batches(n: int, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    size = min(batch_size, n)
    for start in range(0, n - size + 1, size):
        yield order[start:start + size]


def evaluate(apply_fn, params, images, labels, *, batch_size: int = 128) -> dict:
    """Accuracy and mean cross-entropy of a classifier on `images (N, H, W, C)`."""
    fn = jax.jit(apply_fn)
    correct, loss = 0, 0.0
    for start in range(0, len(images), batch_size):
        logits = fn(params, jnp.asarray(images[start:start + batch_size]))
        y = jnp.asarray(labels[start:start + batch_size])
        correct += int(jnp.sum(jnp.argmax(logits, -1) == y))
        loss += float(jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y)))
    return {"accuracy": correct / len(images), "loss": loss / len(images)}


def train(model_cfg: ModelConfig, train_cfg: TrainConfig, *, train_images, train_labels,
          test_images, test_labels, class_names, model_dir: str, seed: int = 0,
          config: dict | None = None, log: Callable[[str], None] = print,
          progress: bool | None = None) -> TrainResult:
    """Trains one classifier on `(N, H, W, C)` images, checkpointing every epoch.

    If `model_dir` already holds checkpoints of the same model and config, training
    resumes after the last finished epoch; if it holds another model's, it refuses.
    `log` gets one line per epoch (losses, accuracies); `progress` (True / False / None
    for the process default, see `jaxrobust._progress`) shows a bar over each epoch's
    steps with the running loss.

    Returns:
        The trained model (eval mode) with its metadata and per-epoch history.
    """
    if len(train_images) == 0 or len(test_images) == 0:
        raise ValueError("training needs non-empty train and test sets.")
    weights = None
    if model_cfg.weights is not None:
        models.check_weights_config(model_cfg.name, model_cfg.weights, width=model_cfg.width)
        weights = {"file": os.path.abspath(os.path.expanduser(model_cfg.weights)),
                   "sha256": _file_digest(model_cfg.weights)}
    meta = {"model": model_cfg.name, "width": model_cfg.width, "hidden": model_cfg.hidden,
            "bn_momentum": model_cfg.bn_momentum,
            "preprocess": models.resolve_preprocess(model_cfg.preprocess, model_cfg.name,
                                                    pretrained=weights is not None),
            "weights": weights, "freeze_backbone": bool(model_cfg.freeze_backbone),
            "num_classes": len(class_names), "class_names": list(class_names),
            "input_shape": list(train_images.shape[1:]), "seed": seed,
            "train": dataclasses.asdict(train_cfg), "config": config or {}}
    meta_path = os.path.join(model_dir, METADATA)
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            old = json.load(f)
        keys = ("model", "width", "hidden", "bn_momentum", "preprocess", "class_names",
                "input_shape", "seed", "freeze_backbone")
        same_training = ({**old.get("train", {}), "epochs": 0}
                         == {**meta["train"], "epochs": 0})  # more epochs may continue
        # folders from before these options
        old.setdefault("preprocess", "none")
        old.setdefault("freeze_backbone", False)
        same_weights = ((old.get("weights") or {}).get("sha256")
                        == (weights or {}).get("sha256"))
        if any(old.get(k) != meta.get(k) for k in keys) or not same_training \
                or not same_weights:
            raise ValueError(f"{model_dir} holds a model trained with another configuration; "
                             "pass another --out (or delete the folder) to start afresh.")
    model = _build(meta)
    if weights is not None:  # the backbone starts from Keras' weights (a resume restores)
        try:
            assign_keras_weights(model.backbone, weights["file"], model_name=model_cfg.name)
        except ValueError as e:
            raise ValueError(f"{e} Expected Keras' {model_cfg.name} notop weights "
                             f"({models.KERAS_NOTOP[model_cfg.name]}).") from None
    os.makedirs(model_dir, exist_ok=True)  # only once the model is built and loaded
    _io.write_json(meta_path, meta)
    model.train()
    if meta["freeze_backbone"]:
        model.backbone.eval()  # as Keras' frozen base: batch norm in inference mode
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = _optimizer(train_cfg)
    if meta["freeze_backbone"]:  # the backbone's parameters get no updates
        labels = jax.tree_util.tree_map_with_path(
            lambda path, _: "frozen" if "backbone" in jax.tree_util.keystr(path) else "train",
            params)
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
    opt_state = tx.init(params)
    history: list[dict] = []
    manager = _manager(model_dir)
    start_epoch = 0
    latest = manager.latest_step()
    if latest is not None:
        target = {"params": _pure(params), "rest": _pure(rest), "opt_state": opt_state}
        restored = manager.restore(latest, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), history=ocp.args.JsonRestore()))
        nnx.replace_by_pure_dict(params, restored["state"]["params"])
        nnx.replace_by_pure_dict(rest, restored["state"]["rest"])
        opt_state = restored["state"]["opt_state"]
        history = list(restored["history"] or [])
        start_epoch = latest
        log(f"  resuming {model_cfg.name} after epoch {latest}")

    @jax.jit
    def step(params, rest, opt_state, x, y):
        def loss_fn(params, rest):
            # fresh Variables at this trace level, so batch norm may update its stats
            m = nnx.merge(graphdef, params, jax.tree.map(lambda a: a, rest))
            logits = m(x)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, (logits, nnx.state(m, ...))

        (loss, (logits, state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        _, new_rest = nnx.split_state(state, nnx.Param, ...)
        acc = jnp.mean(jnp.argmax(logits, -1) == y)
        return params, new_rest, opt_state, loss, acc

    rng = np.random.default_rng(seed)
    for _ in range(start_epoch):  # keep the shuffling order identical after a resume
        rng.permutation(len(train_images))
    for epoch in range(start_epoch, train_cfg.epochs):
        start = time.perf_counter()
        losses, accs = [], []
        batches = list(_batches(len(train_images), train_cfg.batch_size, rng))
        with _progress.bar(total=len(batches), unit="step", progress=progress,
                           desc=f"train {model_cfg.name} {epoch + 1}/{train_cfg.epochs}",
                           leave=False) as bar:
            for idx in batches:
                params, rest, opt_state, loss, acc = step(
                    params, rest, opt_state, jnp.asarray(train_images[idx]),
                    jnp.asarray(train_labels[idx]))
                losses.append(float(loss))
                accs.append(float(acc))
                if not np.isfinite(losses[-1]):
                    raise ValueError(f"{model_cfg.name}: the loss became {losses[-1]} at "
                                     f"epoch {epoch + 1}; lower train.learning_rate.")
                bar.set_postfix(loss=f"{np.mean(losses):.3f}", refresh=False)
                bar.update()
        eval_fn, eval_params = _eval_pure(params, rest, model)
        scores = evaluate(eval_fn, eval_params, test_images, test_labels)
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                        "train_accuracy": float(np.mean(accs)),
                        "test_loss": scores["loss"], "test_accuracy": scores["accuracy"],
                        "seconds": time.perf_counter() - start})
        log(f"  {model_cfg.name} epoch {epoch + 1}/{train_cfg.epochs}: loss "
            f"{history[-1]['train_loss']:.3f}, train acc {history[-1]['train_accuracy']:.3f}, "
            f"test acc {scores['accuracy']:.3f} ({history[-1]['seconds']:.1f} s)")
        state = {"params": _pure(params), "rest": _pure(rest), "opt_state": opt_state}
        manager.save(epoch + 1, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), history=ocp.args.JsonSave(history)))
        manager.wait_until_finished()
    manager.close()
    apply_fn, eval_params = _eval_pure(params, rest, model)
    return TrainResult(apply_fn, eval_params, meta, history)


def _eval_pure(params, rest, model):
    nnx.update(model, nnx.merge_state(params, rest))
    return models.pure(model)


def restore(model_dir: str):
    """`(apply_fn, params, metadata)` of the model trained in `model_dir` (eval mode).

    Raises:
        ValueError: no model there, or checkpoints that do not fit its metadata.
    """
    meta_path = os.path.join(model_dir, METADATA)
    if not os.path.isfile(meta_path):
        raise ValueError(f"{model_dir} holds no trained model (no {METADATA}); "
                         "train one with `jaxrobust train CONFIG --out DIR`.")
    with open(meta_path) as f:
        meta = json.load(f)
    model = _build(meta)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    manager = _manager(model_dir)
    latest = manager.latest_step()
    if latest is None:
        raise ValueError(f"{model_dir} has no finished checkpoint; train it first.")
    tx_state = _optimizer(TrainConfig(**meta["train"])).init(params)
    target = {"params": _pure(params), "rest": _pure(rest), "opt_state": tx_state}
    try:
        restored = manager.restore(latest, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), history=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 - orbax reports mismatches in many ways
        raise ValueError(f"the checkpoint in {model_dir} does not fit model "
                         f"{meta['model']!r} ({type(e).__name__}: {e}).") from e
    finally:
        manager.close()
    nnx.replace_by_pure_dict(params, restored["state"]["params"])
    nnx.replace_by_pure_dict(rest, restored["state"]["rest"])
    nnx.update(model, nnx.merge_state(params, rest))
    apply_fn, eval_params = models.pure(model)
    meta["history"] = restored["history"]
    meta["epoch"] = latest
    return apply_fn, eval_params, meta

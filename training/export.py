"""Export a trained model's serving towers to ONNX and add them to its bundle.

The model describes its towers (:meth:`models.base.Recommender.serving_towers`); this module
only converts them and writes them with their states. The contract with the service, the
towers' input and output names and shapes, is :mod:`bundle.towers`.

For a known user whose history is exactly its training items, the user tower reproduces the
trained model's final user vector (the parity tests check this for every exportable model), so
the same code serves stored users, users with fresh interactions and anonymous histories.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import bundle as bundle_format
from bundle import towers as names
from models.base import ServingTowers
from training.checkpoint import load_checkpoint

OPSET = 17


class ExportError(RuntimeError):
    """The model cannot be exported as serving towers."""


def _onnx_bytes(
    module: nn.Module,
    args: tuple,
    names_in: list[str],
    names_out: list[str],
    dynamic: dict[str, dict[int, str]],
) -> bytes:
    buffer = io.BytesIO()
    # The TorchScript exporter: our graphs are static, and it needs no extra packages. Its
    # deprecation notice and the tracer's notes on constant shape checks are expected.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module.eval(),
            args,
            buffer,
            input_names=names_in,
            output_names=names_out,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def tower_onnx(towers: ServingTowers) -> tuple[bytes, bytes]:
    """The ONNX bytes of the item and the user tower, both with dynamic batch axes."""
    states = int(towers.item_states.shape[1])
    user_dim = int(towers.user_states.shape[1])
    item = _onnx_bytes(
        towers.item_tower.cpu(),
        (torch.zeros(2, towers.feature_dim),),
        list(names.ITEM_INPUTS),
        list(names.ITEM_OUTPUTS),
        names.ITEM_AXES,
    )
    # a sequential user tower takes exactly max_history items (left-padded by the service):
    # its attention reshapes do not export with a symbolic history length
    history = towers.max_history or 3
    axes = names.USER_AXES if towers.max_history is None else {
        name: {axis: label for axis, label in labels.items() if label != "history"}
        for name, labels in names.USER_AXES.items()}
    user = _onnx_bytes(
        towers.user_tower.cpu(),
        (torch.zeros(2, history, states), torch.ones(2, history), torch.zeros(2, user_dim),
         torch.ones(2, 1)),
        list(names.USER_INPUTS),
        list(names.USER_OUTPUTS),
        axes,
    )
    return item, user


def text_tower_files(model: nn.Module, config: dict) -> tuple[dict, dict] | None:
    """``(files, text_input)`` of the text tower for a model trained on the ``title_fields``
    feature set (frozen encoder + pooling + the model's item tower, from token ids), or
    None for any other model."""
    if config.get("feature_set") != "title_fields" or not hasattr(model, "states"):
        return None
    from bundle.text_fields import FIELDS, tokenize_fields
    from models.crossan_towers import SequentialItemTower
    from models.text_tower import TextItemTower
    from training.encoders import get_encoder_spec, load_encoder

    spec = get_encoder_spec("minilm")  # the encoder of training.feature_sets
    encoder = load_encoder(spec.name)
    tower = TextItemTower(encoder.model, config["state_layers"], config["state_pooling"],
                          SequentialItemTower(model)).eval()
    ids, mask = tokenize_fields(encoder.tokenizer, ["an example title # tag", "# tag"])
    example = (torch.as_tensor(ids), torch.as_tensor(mask))
    onnx = _onnx_bytes(tower, example, list(names.TEXT_INPUTS), list(names.TEXT_OUTPUTS),
                       names.TEXT_AXES)
    tokenizer = (spec.folder() / bundle_format.TOKENIZER).read_bytes()
    int8 = quantize_text_tower(onnx)
    files = {bundle_format.TEXT_TOWER: lambda p: p.write_bytes(onnx),
             bundle_format.TEXT_TOWER_INT8: lambda p: p.write_bytes(int8),
             bundle_format.TOKENIZER: lambda p: p.write_bytes(tokenizer)}
    text_input = {"fields": list(FIELDS), "split": "title_fields",
                  "max_tokens": spec.max_length, "encoder": spec.name}
    return files, text_input


#: Where the frozen encoder sits in the text tower's graph (TextItemTower.encoder).
_ENCODER_NODES = "/encoder/"


def quantize_text_tower(onnx_fp32: bytes, per_channel: bool = True) -> bytes:
    """The text tower with ONNX Runtime's dynamic int8 quantisation of the frozen encoder.

    Only the encoder's matrix products with a weight (its projections and feed-forward
    layers) take int8 weights, activations quantised per batch at run time; the products of
    two activations (attention scores), the embedding table, the trained adapters and the
    fusion gate stay float32, so the error is the frozen encoder's alone. Per-channel scales
    by default: on the MicroLens test set (``benchmarks/text_tower.py quality``, every item
    embedded from its title) they cost 0.0015 HR@10 against float32, per-tensor ones 0.0038,
    at the same speed.
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        source.write_bytes(onnx_fp32)
        graph = onnx.load(source).graph
        weights = {tensor.name for tensor in graph.initializer}
        outside = [node.name for node in graph.node if node.op_type in ("MatMul", "Gemm")
                   and not (node.name.startswith(_ENCODER_NODES)
                            and any(name in weights for name in node.input))]
        # the quantiser logs a line per kept tensor and advice for static quantisation
        # through the root logger: silenced for the call
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            quantize_dynamic(source, target, weight_type=QuantType.QInt8,
                             per_channel=per_channel, op_types_to_quantize=["MatMul"],
                             nodes_to_exclude=outside)
        finally:
            logging.disable(previous)
        return target.read_bytes()


def export_bundle(bundle_dir: str | Path) -> None:
    """Add both towers and the per-item / per-user states to an existing bundle, atomically."""
    bundle_dir = Path(bundle_dir)
    manifest = bundle_format.read_manifest(bundle_dir)
    model, _ = load_checkpoint(bundle_dir / bundle_format.WEIGHTS)
    towers = model.cpu().eval().serving_towers()
    if towers is None:
        raise ExportError(
            f"{manifest.model}: this model has no feature path, so no serving towers; "
            "the bundle keeps its embeddings only"
        )
    item_states = towers.item_states.detach().cpu().numpy().astype(np.float32)
    user_states = towers.user_states.detach().cpu().numpy().astype(np.float32)
    item_onnx, user_onnx = tower_onnx(towers)
    text = text_tower_files(model, manifest.config)
    bundle_format.add_files(
        bundle_dir,
        {
            bundle_format.ITEM_TOWER: lambda p: p.write_bytes(item_onnx),
            bundle_format.USER_TOWER: lambda p: p.write_bytes(user_onnx),
            bundle_format.ITEM_STATES: lambda p: np.save(p, item_states),
            bundle_format.USER_STATES: lambda p: np.save(p, user_states),
            **(text[0] if text else {}),
        },
        text_input=text[1] if text else None,
        towers={
            "feature_dim": towers.feature_dim,
            "history_state_dim": int(item_states.shape[1]),
            "user_state_dim": int(user_states.shape[1]),
            "opset": OPSET,
            "max_history": towers.max_history,
        },
    )

"""One small handler per NeuralNetwork layer type, registered with :func:`nn_layer`.

A handler receives the :class:`LayerContext` (builder, shapes, weights, error helpers),
the layer protobuf and the ONNX names of the layer's inputs; it returns the ONNX names of
the layer's outputs (one name or a list). Adding a layer type is adding one function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_coreml_quality.runtime.onnx.handlers import registrar
from pytest_coreml_quality.runtime.onnx.nn_layers.context import LayerContext

Handler = Callable[[LayerContext, Any, list[str]], "str | list[str]"]

HANDLERS: dict[str, Handler] = {}


#: ``@nn_layer("convolution")``: register the translation of ``NeuralNetworkLayer`` oneof names.
nn_layer = registrar(HANDLERS, "layer type")


def _load_handlers() -> None:
    # Importing the modules runs their @nn_layer decorators.
    from pytest_coreml_quality.runtime.onnx.nn_layers import (  # noqa: F401
        activation,
        conv,
        cropresize,
        elementwise,
        legacy,
        ndindex,
        nms,
        ndshape,
        normalization,
        pooling,
        recurrent,
        resize,
        scatter,
        sequence,
        tensor,
    )


_load_handlers()

__all__ = ["HANDLERS", "LayerContext", "nn_layer"]

"""LSTM layer specs: the compile-time description of a layer, loaded from TOML and validated.

A spec file describes a model: a dtype and a stack of `[[layer]]` tables. It loads into a
`ModelSpec` holding one frozen `LSTMSpec` per layer. Everything a spec holds is a
compile-time constant of the generated kernels; sequence length and batch size are not
in it because they are run-time arguments.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from lstmgen.errors import SpecError

# Storage dtypes the generator emits code for: the C type of tensors in memory and the type
# of dot products and the cell state inside the kernels. float16 and bfloat16 store in 16 bits
# and compute in float32, as cuDNN does; their cell state stays float32 between steps.
# NumPy knows bfloat16 through ml_dtypes: lstmgen.dtypes turns these names into NumPy dtypes.
DTYPES = {
    "float16": {"storage": "__half", "accumulate": "float", "bytes": 2,
                "accumulate_dtype": "float32", "accumulate_bytes": 4},
    "bfloat16": {"storage": "__nv_bfloat16", "accumulate": "float", "bytes": 2,
                 "accumulate_dtype": "float32", "accumulate_bytes": 4},
    "float32": {"storage": "float", "accumulate": "float", "bytes": 4,
                "accumulate_dtype": "float32", "accumulate_bytes": 4},
    "float64": {"storage": "double", "accumulate": "double", "bytes": 8,
                "accumulate_dtype": "float64", "accumulate_bytes": 8},
}
# Bias parameters of each mode, in torch's naming where torch has them.
BIAS_PARAMETERS = {"double": ("b_ih", "b_hh"), "single": ("b",), "none": ()}
BIAS_MODES = tuple(BIAS_PARAMETERS)

_LAYER_FIELDS = {"input_size", "hidden_size", "return_sequences", "bias"}
_MODEL_FIELDS = {"dtype", "allow_tf32", "layer", "head"}
_HEAD_FIELDS = {"output_size", "activation"}
# Output activations of the dense head. Softmax is not one: classification feeds the head's
# linear output (logits) to the softmax cross-entropy loss, which is stabler fused.
HEAD_ACTIVATIONS = ("linear", "sigmoid", "tanh", "relu")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class LSTMSpec:
    """One LSTM layer as the generator sees it. Validated on construction.

    `where` names the spec file and layer for error messages; it is not part of the
    layer's identity (two layers with equal fields share compiled kernels).
    """

    input_size: int
    hidden_size: int
    dtype: str = "float32"
    bias: str = "double"
    return_sequences: bool = True
    # float32 only: the recurrence's products and the layer's GEMMs on tensor cores in TF32
    # (10-bit mantissa inputs, float32 sums), as torch.backends.cudnn.allow_tf32 does for
    # cuDNN's LSTM; off by default, because
    # float32 users compare against strict float32 results.
    allow_tf32: bool = False
    where: str = field(default="", compare=False, hash=False, repr=False)

    def __post_init__(self):
        at = f" ({self.where})" if self.where else ""
        for name, example in (("input_size", 32), ("hidden_size", 128)):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                what = "the number of input features" if name == "input_size" else "the number of units"
                raise SpecError(
                    f"LSTMSpec.{name} must be a positive integer, got {value!r}{at}: "
                    f"set {name} to {what}, e.g. {example}"
                )
        if not isinstance(self.dtype, str) or self.dtype not in DTYPES:
            raise SpecError(
                f"LSTMSpec.dtype {self.dtype!r} is not supported{at}: lstmgen generates kernels "
                f"for {', '.join(DTYPES)}; set dtype to one of them"
            )
        if not isinstance(self.bias, str) or self.bias not in BIAS_MODES:
            raise SpecError(
                f"LSTMSpec.bias {self.bias!r} is not a bias mode{at}: use \"double\" "
                f"(b_ih and b_hh, as torch.nn.LSTM), \"single\" (one bias, as Keras) or \"none\""
            )
        if not isinstance(self.return_sequences, bool):
            raise SpecError(
                f"LSTMSpec.return_sequences must be true or false, got {self.return_sequences!r}{at}: "
                f"write return_sequences = true to output every step, false for the last step only"
            )
        if not isinstance(self.allow_tf32, bool):
            raise SpecError(
                f"LSTMSpec.allow_tf32 must be true or false, got {self.allow_tf32!r}{at}: write "
                f"allow_tf32 = true to run float32 products on tensor cores in TF32, or leave it out"
            )
        if self.allow_tf32 and self.dtype != "float32":
            raise SpecError(
                f"LSTMSpec.allow_tf32 applies to float32 layers, but dtype is {self.dtype}{at}: "
                f"remove allow_tf32 (16-bit layers use tensor cores anyway) or set dtype = \"float32\""
            )

    def describe(self) -> str:
        """One line that identifies the layer, for headers and reports."""
        return (f"input_size={self.input_size} hidden_size={self.hidden_size} dtype={self.dtype} "
                f"bias={self.bias} return_sequences={str(self.return_sequences).lower()}"
                + (" allow_tf32=true" if self.allow_tf32 else ""))


@dataclass(frozen=True)
class HeadSpec:
    """The optional dense layer after the LSTM stack: y = activation(h W^T + b).

    It applies to every step when the last layer returns sequences, else to h_T.
    """

    input_size: int
    output_size: int
    activation: str = "linear"
    where: str = field(default="", compare=False, hash=False, repr=False)

    def __post_init__(self):
        at = f" ({self.where})" if self.where else ""
        if not _is_int(self.output_size) or self.output_size <= 0:
            raise SpecError(
                f"HeadSpec.output_size must be a positive integer, got {self.output_size!r}{at}: "
                f"set output_size to the number of outputs per step, e.g. 1 for a regression"
            )
        if not isinstance(self.activation, str) or self.activation not in HEAD_ACTIVATIONS:
            raise SpecError(
                f"HeadSpec.activation {self.activation!r} is not supported{at}: use one of "
                f"{', '.join(HEAD_ACTIVATIONS)} (for classification use linear: the softmax "
                f"cross-entropy loss takes the logits)"
            )


@dataclass(frozen=True)
class ModelSpec:
    """A stack of layers from one spec file, and an optional dense head."""

    name: str
    layers: tuple[LSTMSpec, ...]
    source: str = ""
    head: HeadSpec | None = None


def load_spec(path: str | Path) -> ModelSpec:
    """Read and validate a TOML spec file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"spec file {path} does not exist: check the path, e.g. specs/seed.toml") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"spec file {path} cannot be read as text ({error}): pass a UTF-8 TOML file") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"spec file {path} is not valid TOML ({error}): fix the syntax at that line") from None
    return parse_spec(data, name=path.stem, source=str(path))


def parse_spec(data: dict, name: str = "model", source: str = "<spec>") -> ModelSpec:
    """Validate a spec already parsed into a dict (the body of a spec file)."""
    unknown = sorted(set(data) - _MODEL_FIELDS)
    if unknown:
        raise SpecError(
            f"unknown field {unknown[0]!r} at the top of {source}: a spec file holds "
            f"{', '.join(sorted(_MODEL_FIELDS))}; remove it or check its spelling"
        )
    dtype = data.get("dtype", "float32")
    allow_tf32 = data.get("allow_tf32", False)
    raw_layers = data.get("layer")
    if isinstance(raw_layers, dict):
        raise SpecError(
            f"{source} has a single [layer] table: layers are an array of tables; write "
            f"[[layer]] (double brackets) before each layer"
        )
    if not isinstance(raw_layers, list) or not raw_layers:
        raise SpecError(
            f"{source} defines no layers: add at least one [[layer]] table with hidden_size "
            f"(and input_size for the first)"
        )
    layers: list[LSTMSpec] = []
    for index, raw in enumerate(raw_layers, start=1):
        layers.append(_parse_layer(raw, index, layers[-1] if layers else None, dtype, allow_tf32, source))
    head = _parse_head(data["head"], layers[-1], source) if "head" in data else None
    return ModelSpec(name=name, layers=tuple(layers), source=source, head=head)


def _parse_head(raw, last: LSTMSpec, source: str) -> HeadSpec:
    where = f"{source}, [head]"
    if not isinstance(raw, dict):
        raise SpecError(f"head in {source} is {raw!r}, not a table: write it as a [head] table")
    unknown = sorted(set(raw) - _HEAD_FIELDS)
    if unknown:
        raise SpecError(
            f"unknown field {unknown[0]!r} in {where}: a [head] holds "
            f"{', '.join(sorted(_HEAD_FIELDS))}; remove it or check its spelling"
        )
    if "output_size" not in raw:
        raise SpecError(f"{where} has no output_size: add output_size = <outputs per step>, e.g. 1")
    return HeadSpec(input_size=last.hidden_size, output_size=raw["output_size"],
                    activation=raw.get("activation", "linear"), where=where)


def _parse_layer(raw: dict, index: int, previous: LSTMSpec | None, dtype: str, allow_tf32: bool,
                 source: str) -> LSTMSpec:
    where = f"{source}, layer {index}"
    if not isinstance(raw, dict):
        raise SpecError(f"layer {index} of {source} is {raw!r}, not a table: write each layer as a [[layer]] table")
    unknown = sorted(set(raw) - _LAYER_FIELDS)
    if unknown:
        raise SpecError(
            f"unknown field {unknown[0]!r} in {where}: a [[layer]] holds "
            f"{', '.join(sorted(_LAYER_FIELDS))}; remove it or check its spelling"
        )
    if "hidden_size" not in raw:
        raise SpecError(f"{where} has no hidden_size: add hidden_size = <number of units>, e.g. 128")
    input_size = raw.get("input_size")
    if previous is None and input_size is None:
        raise SpecError(
            f"{where} has no input_size: the first layer must say how many features "
            f"each time step has, e.g. input_size = 32"
        )
    if previous is not None and not previous.return_sequences:
        raise SpecError(
            f"layer {index - 1} of {source} feeds layer {index} but has return_sequences = false, "
            f"so layer {index} would get one step instead of a sequence: set "
            f"return_sequences = true in layer {index - 1}"
        )
    # Build first, so that each field's own check speaks before the stack check.
    spec = LSTMSpec(
        input_size=previous.hidden_size if input_size is None else input_size,
        hidden_size=raw["hidden_size"],
        dtype=dtype,
        bias=raw.get("bias", "double"),
        return_sequences=raw.get("return_sequences", True),
        allow_tf32=allow_tf32,
        where=where,
    )
    if previous is not None and spec.input_size != previous.hidden_size:
        raise SpecError(
            f"{where} has input_size {spec.input_size} but layer {index - 1} outputs "
            f"hidden_size {previous.hidden_size}: set input_size = {previous.hidden_size} "
            f"or leave it out (it defaults to the previous layer's hidden_size)"
        )
    return spec

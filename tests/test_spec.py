"""CPU tests of spec loading and validation (lstmgen.codegen.spec).

Every user error must say what is wrong, where (spec file and layer) and how to fix it, so
each error test matches all three parts of the message. Spec files are written into tmp_path
as real TOML so that their path shows up in the messages.
"""

import dataclasses
import re
from pathlib import Path

import pytest

from lstmgen.codegen import LSTMSpec, load_spec
from lstmgen.errors import SpecError

SPECS = Path(__file__).resolve().parent.parent / "specs"


def toml(*layers: str, head: str = 'dtype = "float32"') -> str:
    """A spec file: `head`, then one [[layer]] table per body in `layers`."""
    return "\n".join([head, *(f"[[layer]]\n{body}" for body in layers)]) + "\n"


def write_spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "model.toml"
    path.write_text(text)
    return path


def field_error(field: str, got: str) -> str:
    """The message LSTMSpec gives for a bad size, raised from layer 1 of the spec file."""
    what = {"input_size": "the number of input features", "hidden_size": "the number of units"}[field]
    return rf"LSTMSpec\.{field} must be a positive integer, got {got} \({{file}}, layer 1\): set {field} to {what}"


FIRST = "input_size = 1\nhidden_size = 5"

# (spec file text, message regex in which {file} stands for the escaped path of the file)
ERRORS = [
    pytest.param(
        'dtype = "float32"\n[[layer]\nhidden_size = 5\n',
        r"spec file {file} is not valid TOML \(.*at line 2, column 8\)\): fix the syntax at that line",
        id="invalid-toml"),
    pytest.param(
        toml(FIRST, head='dtypes = "float32"'),
        r"unknown field 'dtypes' at the top of {file}: a spec file holds allow_tf32, dtype, head, layer; "
        r"remove it or check its spelling",
        id="unknown-top-level-field"),
    pytest.param(
        toml(FIRST, "hiden_size = 5"),
        r"unknown field 'hiden_size' in {file}, layer 2: a \[\[layer\]\] holds "
        r"bias, hidden_size, input_size, return_sequences; remove it or check its spelling",
        id="unknown-layer-field"),
    pytest.param(
        toml("input_size = 1"),
        r"{file}, layer 1 has no hidden_size: add hidden_size = <number of units>, e.g\. 128",
        id="missing-hidden_size"),
    pytest.param(
        toml("hidden_size = 5"),
        r"{file}, layer 1 has no input_size: the first layer must say how many features .*"
        r"e\.g\. input_size = 32",
        id="missing-first-input_size"),
    pytest.param(toml("input_size = 1\nhidden_size = 0"), field_error("hidden_size", "0"),
                 id="hidden_size-zero"),
    pytest.param(toml("input_size = 1\nhidden_size = -3"), field_error("hidden_size", "-3"),
                 id="hidden_size-negative"),
    pytest.param(toml('input_size = 1\nhidden_size = "128"'), field_error("hidden_size", "'128'"),
                 id="hidden_size-string"),
    pytest.param(toml("input_size = 1\nhidden_size = 12.5"), field_error("hidden_size", r"12\.5"),
                 id="hidden_size-float"),
    pytest.param(toml("input_size = 1\nhidden_size = true"), field_error("hidden_size", "True"),
                 id="hidden_size-bool"),
    pytest.param(toml("input_size = 0\nhidden_size = 5"), field_error("input_size", "0"),
                 id="input_size-zero"),
    pytest.param(
        toml(FIRST, head='dtype = "float8"'),
        r"LSTMSpec\.dtype 'float8' is not supported \({file}, layer 1\): lstmgen generates kernels "
        r"for float16, bfloat16, float32, float64; set dtype to one of them",
        id="dtype-float8"),
    pytest.param(
        toml(FIRST, head='dtype = "int8"'),
        r"LSTMSpec\.dtype 'int8' is not supported \({file}, layer 1\): .*set dtype to one of them",
        id="dtype-int8"),
    pytest.param(
        toml(FIRST, head="dtype = 32"),
        r"LSTMSpec\.dtype 32 is not supported \({file}, layer 1\): .*set dtype to one of them",
        id="dtype-not-a-string"),
    pytest.param(
        toml(FIRST + '\nbias = "both"'),
        r"LSTMSpec\.bias 'both' is not a bias mode \({file}, layer 1\): use \"double\" .*"
        r"\"single\" .* or \"none\"",
        id="unknown-bias"),
    pytest.param(
        toml(FIRST + '\nreturn_sequences = "yes"'),
        r"LSTMSpec\.return_sequences must be true or false, got 'yes' \({file}, layer 1\): "
        r"write return_sequences = true to output every step, false for the last step only",
        id="return_sequences-not-bool"),
    pytest.param(
        toml(FIRST, head='dtype = "float16"\nallow_tf32 = true'),
        r"LSTMSpec\.allow_tf32 applies to float32 layers, but dtype is float16 \({file}, layer 1\): "
        r"remove allow_tf32 .* or set dtype = \"float32\"",
        id="tf32-on-float16"),
    pytest.param(
        toml(FIRST, head='allow_tf32 = "yes"'),
        r"LSTMSpec\.allow_tf32 must be true or false, got 'yes' \({file}, layer 1\): write allow_tf32 = true",
        id="tf32-not-bool"),
    pytest.param(
        toml(),
        r"{file} defines no layers: add at least one \[\[layer\]\] table with hidden_size",
        id="no-layers"),
    pytest.param(
        toml(head="layer = []"),
        r"{file} defines no layers: add at least one \[\[layer\]\] table with hidden_size",
        id="empty-layer-array"),
    pytest.param(
        toml(FIRST, "input_size = 4\nhidden_size = 3"),
        r"{file}, layer 2 has input_size 4 but layer 1 outputs hidden_size 5: "
        r"set input_size = 5 or leave it out",
        id="inconsistent-stack"),
    pytest.param(
        toml(FIRST, "hidden_size = 4\nreturn_sequences = false", "hidden_size = 3"),
        r"layer 2 of {file} feeds layer 3 but has return_sequences = false, so layer 3 would get "
        r"one step instead of a sequence: set return_sequences = true in layer 2",
        id="middle-layer-returns-last-step"),
    pytest.param(
        toml(FIRST, 'input_size = "5"\nhidden_size = 3'),
        field_error("input_size", "'5'").replace("layer 1", "layer 2"),
        id="later-input_size-wrong-type"),
    pytest.param(
        toml(FIRST, "input_size = 0\nhidden_size = 3"),
        field_error("input_size", "0").replace("layer 1", "layer 2"),
        id="later-input_size-zero"),
    pytest.param(
        'dtype = "float32"\n[layer]\ninput_size = 1\nhidden_size = 5\n',
        r"{file} has a single \[layer\] table: layers are an array of tables; write \[\[layer\]\] "
        r"\(double brackets\) before each layer",
        id="single-bracket-layer"),
    pytest.param(
        toml(head="layer = [1, 2]"),
        r"layer 1 of {file} is 1, not a table: write each layer as a \[\[layer\]\] table",
        id="layer-not-a-table"),
]


@pytest.mark.parametrize("text, message", ERRORS)
def test_spec_file_error(tmp_path, text, message):
    path = write_spec(tmp_path, text)
    with pytest.raises(SpecError, match=message.format(file=re.escape(str(path)))):
        load_spec(path)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(SpecError, match=rf"spec file {re.escape(str(tmp_path))} cannot be read as text .*: pass a UTF-8 TOML file"):
        load_spec(tmp_path)


def test_missing_file(tmp_path):
    path = tmp_path / "missing.toml"
    with pytest.raises(SpecError, match=rf"spec file {re.escape(str(path))} does not exist: check the path"):
        load_spec(path)


@pytest.mark.parametrize("fields, message", [
    ({"input_size": 1, "hidden_size": 0},
     "LSTMSpec.hidden_size must be a positive integer, got 0: set hidden_size to the number of units, e.g. 128"),
    ({"input_size": -1, "hidden_size": 5},
     "LSTMSpec.input_size must be a positive integer, got -1: set input_size to the number of input features"),
    ({"input_size": 1, "hidden_size": 5, "dtype": "float8"},
     "LSTMSpec.dtype 'float8' is not supported: lstmgen generates kernels for float16, bfloat16, float32, float64"),
    ({"input_size": 1, "hidden_size": 5, "bias": "triple"},
     "LSTMSpec.bias 'triple' is not a bias mode: use \"double\""),
    ({"input_size": 1, "hidden_size": 5, "return_sequences": 1},
     "LSTMSpec.return_sequences must be true or false, got 1: write return_sequences = true"),
])
def test_direct_construction_error_names_the_field(fields, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        LSTMSpec(**fields)


def test_allow_tf32_reaches_every_layer_and_their_description(tmp_path):
    path = tmp_path / "tf32.toml"
    path.write_text('allow_tf32 = true\n[[layer]]\ninput_size = 3\nhidden_size = 4\n[[layer]]\nhidden_size = 2\n')
    layers = load_spec(path).layers
    assert [layer.allow_tf32 for layer in layers] == [True, True]
    assert layers[0].describe().endswith("return_sequences=true allow_tf32=true")
    # Off by default, and then not in the description: kernels rendered before it existed keep their text.
    assert "tf32" not in LSTMSpec(input_size=3, hidden_size=4).describe()


def test_seed_spec_loads():
    path = SPECS / "seed.toml"
    model = load_spec(path)
    assert model.name == "seed"
    assert model.source == str(path)
    assert model.layers == (
        LSTMSpec(input_size=1, hidden_size=5, dtype="float32", bias="double", return_sequences=True),
        LSTMSpec(input_size=5, hidden_size=1, dtype="float32", bias="double", return_sequences=False),
    )
    assert [layer.where for layer in model.layers] == [f"{path}, layer 1", f"{path}, layer 2"]


def test_wide_spec_loads():
    model = load_spec(SPECS / "wide.toml")
    assert model.layers == (
        LSTMSpec(input_size=64, hidden_size=256, dtype="float64", bias="single", return_sequences=True),
        LSTMSpec(input_size=256, hidden_size=1024, dtype="float64", bias="single", return_sequences=False),
    )


def test_input_size_defaults_to_previous_hidden_size(tmp_path):
    path = write_spec(tmp_path, toml("input_size = 3\nhidden_size = 7", "hidden_size = 4", "hidden_size = 2"))
    assert [(layer.input_size, layer.hidden_size) for layer in load_spec(path).layers] == [(3, 7), (7, 4), (4, 2)]


def test_dtype_defaults_to_float32(tmp_path):
    path = write_spec(tmp_path, toml(FIRST, head=""))
    assert load_spec(path).layers[0].dtype == "float32"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_every_generated_dtype_loads(tmp_path, dtype):
    path = write_spec(tmp_path, toml(FIRST, "hidden_size = 2", head=f'dtype = "{dtype}"'))
    assert [layer.dtype for layer in load_spec(path).layers] == [dtype, dtype]


def test_spec_is_frozen():
    spec = LSTMSpec(input_size=1, hidden_size=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.hidden_size = 6


def test_where_is_not_part_of_identity():
    """The runtime caches compiled kernels by spec: equal layers from different files share them."""
    a = LSTMSpec(input_size=1, hidden_size=5, where="a.toml, layer 1")
    b = LSTMSpec(input_size=1, hidden_size=5, where="b.toml, layer 2")
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != LSTMSpec(input_size=1, hidden_size=5, return_sequences=False)


HEAD_ERRORS = [
    pytest.param("[head]\nactivation = \"tanh\"\n",
                 r"{file}, \[head\] has no output_size: add output_size = <outputs per step>", id="no-output_size"),
    pytest.param("[head]\noutput_size = 0\n",
                 r"HeadSpec\.output_size must be a positive integer, got 0 \({file}, \[head\]\)", id="zero-output"),
    pytest.param("[head]\noutput_size = 2\nactivation = \"softmax\"\n",
                 r"HeadSpec\.activation 'softmax' is not supported \({file}, \[head\]\): use one of linear, "
                 r"sigmoid, tanh, relu \(for classification use linear", id="softmax"),
    pytest.param("[head]\noutput_size = 2\nunits = 3\n",
                 r"unknown field 'units' in {file}, \[head\]: a \[head\] holds activation, output_size", id="unknown"),
    pytest.param("head = 3\n", r"head in {file} is 3, not a table: write it as a \[head\] table", id="not-a-table"),
]


@pytest.mark.parametrize("head, message", HEAD_ERRORS)
def test_head_error(tmp_path, head, message):
    path = write_spec(tmp_path, head + toml(FIRST, head=""))
    with pytest.raises(SpecError, match=message.format(file=re.escape(str(path)))):
        load_spec(path)


def test_head_takes_the_last_layers_hidden_size(tmp_path):
    path = write_spec(tmp_path, toml(FIRST, "hidden_size = 7") + "[head]\noutput_size = 3\nactivation = \"sigmoid\"\n")
    head = load_spec(path).head
    assert (head.input_size, head.output_size, head.activation) == (7, 3, "sigmoid")
    assert load_spec(SPECS / "seed.toml").head is None

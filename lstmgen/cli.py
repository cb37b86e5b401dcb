"""The `lstmgen` command: generate, compile, verify, demo."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lstmgen.codegen import SM90_H200, ModelSpec, load_spec, render_layer
from lstmgen.errors import LSTMGenError, NoGPUError
from lstmgen.train_cli import add_train_parser


def write_generated(model: ModelSpec, out_dir: Path) -> list[Path]:
    """Render every layer of `model` for sm_90 into out_dir/<spec name>/; return the files."""
    folder = out_dir / model.name
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, spec in enumerate(model.layers, start=1):
        for source in render_layer(spec, SM90_H200).values():
            path = folder / source.filename(index)
            path.write_text(source.text)
            written.append(path)
    return written


def compile_model(model: ModelSpec) -> list[str]:
    """Compile every kernel of `model` as rendered for the H200 with NVRTC (no GPU needed)."""
    arch = SM90_H200.arch
    from lstmgen.runtime.compile import compile_for_arch

    lines = []
    for index, spec in enumerate(model.layers, start=1):
        for direction, source in render_layer(spec, SM90_H200).items():
            start = time.perf_counter()
            cubin = compile_for_arch(spec, direction, source.text, arch)
            lines.append(f"layer {index} {direction}: {len(cubin)} bytes of {arch} code "
                         f"in {time.perf_counter() - start:.2f} s")
    return lines


def run_model(model_spec: ModelSpec, steps: int = 100, batch: int = 16) -> str:
    """Train-mode forward and backward of the whole stack on random data; a one-line summary."""
    import cupy
    import numpy as np

    from lstmgen.dtypes import numpy_dtype
    from lstmgen.runtime import Model

    model = Model(model_spec, seed=0)
    rng = np.random.default_rng(0)
    first = model_spec.layers[0]
    x = cupy.asarray(rng.uniform(-1, 1, (steps, batch, first.input_size)).astype(numpy_dtype(first.dtype)))
    model.forward(x)  # warm-up: compilation and first-launch costs stay out of the timing
    model.backward(cupy.ones_like(model.forward(x)[0]))
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    y, _ = model.forward(x)
    grads = model.backward(cupy.ones_like(y))
    stop.record()
    stop.synchronize()
    elapsed_ms = cupy.cuda.get_elapsed_time(start, stop)
    return (f"ran T={steps} B={batch}: y {tuple(y.shape)}, |y| max {float(abs(y).max()):.4f}, "
            f"dx {tuple(grads[0]['dx'].shape)}, forward+backward {elapsed_ms:.2f} ms "
            f"({1000 * elapsed_ms / steps:.1f} us/step)")


def _generate(args) -> int:
    for spec_path in args.specs:
        for path in write_generated(load_spec(spec_path), Path(args.output)):
            print(f"wrote {path}")
    return 0


def _compile(args) -> int:
    for spec_path in args.specs:
        for line in compile_model(load_spec(spec_path)):
            print(f"{spec_path}: {line}")
    return 0


def _verify(args) -> int:
    from lstmgen.runtime.device import require_gpu
    from lstmgen.verify import verify_spec

    require_gpu()
    model = load_spec(args.spec)
    print(f"verifying {args.spec}: {args.examples} Hypothesis examples per layer against the float64 NumPy reference")
    passed = verify_spec(model, args.examples)
    print("PASSED" if passed else "FAILED: see the mismatches above")
    return 0 if passed else 1


def _demo(args) -> int:
    from lstmgen.runtime.device import require_gpu

    model = load_spec(args.spec)
    print(f"1. generate: {args.spec} -> {args.output}/{model.name}/")
    for path in write_generated(model, Path(args.output)):
        print(f"   wrote {path}")
    print("2. compile with NVRTC for sm_90 (no GPU needed):")
    for line in compile_model(model):
        print(f"   {line}")
    try:
        require_gpu()
    except NoGPUError as reason:
        print(f"3. verify and run: skipped, they need a CUDA GPU. {reason}")
        return 0
    from lstmgen.verify import verify_spec

    print(f"3. verify against the float64 NumPy reference ({args.examples} examples per layer):")
    if not verify_spec(model, args.examples, log=lambda line: print(f"   {line}")):
        return 1
    print(f"4. run: {run_model(model)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lstmgen", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="render CUDA source for every layer of spec files (no GPU needed)")
    generate.add_argument("specs", nargs="+", help="TOML spec files")
    generate.add_argument("-o", "--output", default="generated", help="output folder (default: generated)")
    generate.set_defaults(run=_generate)

    compile_ = commands.add_parser("compile", help="compile every kernel of spec files for sm_90 with NVRTC (no GPU needed)")
    compile_.add_argument("specs", nargs="+", help="TOML spec files")
    compile_.set_defaults(run=_compile)

    verify = commands.add_parser("verify", help="property-test a spec's kernels against the NumPy reference (GPU)")
    verify.add_argument("spec", help="TOML spec file")
    verify.add_argument("--examples", type=int, default=50, help="Hypothesis examples per layer (default: 50)")
    verify.set_defaults(run=_verify)

    demo = commands.add_parser("demo", help="generate, compile and (on a GPU) verify and run a spec")
    demo.add_argument("spec", nargs="?", default="specs/seed.toml", help="TOML spec file (default: specs/seed.toml)")
    demo.add_argument("-o", "--output", default="generated", help="output folder (default: generated)")
    demo.add_argument("--examples", type=int, default=30, help="Hypothesis examples per layer (default: 30)")
    demo.set_defaults(run=_demo)

    add_train_parser(commands)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except LSTMGenError as error:
        print(f"lstmgen: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

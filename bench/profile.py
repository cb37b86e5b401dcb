"""A layer's recurrence kernels at one (dtype, H, B), run for Nsight Compute to profile:

    ncu --clock-control none -k regex:recurrence --launch-skip 2 --launch-count 2 \
        --section WarpStateStats --section SourceCounters -o step \
        python -m lstmgen.bench.profile float16 1024 8

The first forward and backward launches (compilation, caches) are skipped; the next two are
the profiled ones. Where in the step the warps wait: `ncu -i step.ncu-rep --page source`.
"""

import argparse


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lstmgen.bench.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dtype", help="float32, float16, bfloat16, float64 or tf32")
    parser.add_argument("hidden", type=int)
    parser.add_argument("batch", type=int)
    parser.add_argument("--steps", type=int, default=512)
    args = parser.parse_args(argv)

    import cupy

    from lstmgen.codegen import LSTMSpec
    from lstmgen.dtypes import numpy_dtype
    from lstmgen.runtime import Layer

    storage = "float32" if args.dtype == "tf32" else args.dtype
    layer = Layer(LSTMSpec(args.hidden, args.hidden, storage, "double", return_sequences=True,
                           allow_tf32=args.dtype == "tf32"), seed=0)
    shape = (args.steps, args.batch, args.hidden)
    x = (cupy.random.default_rng(0).random(shape, dtype="float32") * 2 - 1).astype(numpy_dtype(storage))
    dy = cupy.ones(shape, dtype=numpy_dtype(storage))
    for _ in range(2):
        layer.forward(x, training=True)
        layer.backward(dy)
    cupy.cuda.Device().synchronize()


if __name__ == "__main__":
    main()

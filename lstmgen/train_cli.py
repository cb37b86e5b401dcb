"""`lstmgen train SPEC --task NAME`: train a spec's network on a synthetic task."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lstmgen.codegen import load_spec
from lstmgen.dataset import Dataset, write_dataset
from lstmgen.errors import SpecError
from lstmgen.tasks import TASKS

# What the task needs of the network: input features, and what predicting the mean scores.
_TASK_INPUTS = {"zeros": 1, "adding": 2}
_TASK_BASELINE = {"zeros": None, "adding": (1 / 6, "predicting 1 (MSE 1/6)")}


def add_train_parser(commands) -> None:
    train = commands.add_parser("train", help="train a spec's network on a synthetic task (GPU, or --backend reference)")
    train.add_argument("spec", help="TOML spec file")
    train.add_argument("--task", required=True, choices=sorted(TASKS))
    train.add_argument("--samples", type=int, default=300, help="training sequences (default: 300)")
    train.add_argument("--test-samples", type=int, default=0, help="held-out sequences for the test loss")
    train.add_argument("--steps", type=int, default=10, help="sequence length T (default: 10)")
    train.add_argument("--epochs", type=int, default=200)
    train.add_argument("--batch-size", type=int, default=300)
    train.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    train.add_argument("--lr", type=float, default=0.1)
    train.add_argument("--momentum", type=float, default=0.0)
    train.add_argument("--clip", type=float, default=None, help="clip the global gradient norm to this")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--data", default=None, help="data set folder (default: runs/<task>/data-...)")
    train.add_argument("--checkpoint", default=None, help="save weights and state here after every epoch")
    train.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    train.add_argument("--plot", default=None, help="write the loss curve to this PNG")
    train.add_argument("--backend", choices=["gpu", "reference"], default="gpu",
                       help="gpu: lstmgen's kernels; reference: the float64 NumPy reference on the CPU")
    train.add_argument("--target-test-loss", type=float, default=None,
                       help="stop once the test loss is below this; report sequences and wall time to get there")
    train.add_argument("--compare-torch", action="store_true",
                       help="run the same training with torch.nn.LSTM (cuDNN on a GPU) and compare")
    train.add_argument("--memory-limit-mib", type=int, default=None,
                       help="cap CuPy's memory pool, to show training on data larger than GPU memory")
    train.set_defaults(run=run_train)


def _dataset(args, count: int, seed: int, name: str) -> Dataset:
    folder = Path(args.data or f"runs/{args.task}") / f"{name}-{count}x{args.steps}-seed{seed}"
    if (folder / "y.npy").exists():
        return Dataset(folder)
    return write_dataset(folder, args.task, count, args.steps, seed)


def run_train(args) -> int:
    from tqdm import tqdm

    from lstmgen.runtime.checkpoint import load_checkpoint, save_checkpoint
    from lstmgen.runtime.network import Network
    from lstmgen.runtime.optimizer import Optimizer
    from lstmgen.runtime.trainer import evaluate, train_epochs

    spec = load_spec(args.spec)
    _check_arguments(args, spec)
    if args.backend == "gpu":
        from lstmgen.runtime.device import require_gpu

        require_gpu()
        if args.memory_limit_mib:
            import cupy

            cupy.get_default_memory_pool().set_limit(size=args.memory_limit_mib * 2**20)
    train_set = _dataset(args, args.samples, args.seed, "train")
    test_set = _dataset(args, args.test_samples, args.seed + 1, "test") if args.test_samples else None
    network = Network(spec, backend=args.backend, seed=args.seed)
    initial_state = network.torch_state_dict()
    optimizer = Optimizer(network, args.optimizer, lr=args.lr, momentum=args.momentum, clip=args.clip)
    first_epoch, history = 0, []
    if args.resume:
        first_epoch, history = load_checkpoint(args.checkpoint, network, optimizer)
        print(f"resumed from {args.checkpoint} after epoch {first_epoch}")
    print(f"training {spec.name} ({args.backend}) on {args.task}: {len(train_set)} sequences of {args.steps} "
          f"steps ({train_set.nbytes / 2**20:.1f} MiB on disk), {args.optimizer} lr={args.lr}")

    bar = tqdm(total=(args.epochs - first_epoch) * -(-len(train_set) // args.batch_size), unit="step")
    solved = None
    for progress in train_epochs(network, optimizer, train_set, loss="mse", epochs=args.epochs,
                                 batch_size=args.batch_size, seed=args.seed, first_epoch=first_epoch,
                                 history=history, on_step=lambda value, rows: bar.update()):
        bar.set_postfix(epoch=progress.epoch, loss=f"{progress.loss:.4g}",
                        seq_per_s=f"{progress.sequences_per_second:.0f}")
        # A plain line per epoch too, which survives logs that drop the bar's redraws.
        bar.write(f"epoch {progress.epoch}: training loss {progress.loss:.6g}, "
                  f"{progress.sequences_per_second:.0f} sequences/s, {progress.seconds:.1f} s")
        history = progress.history
        if args.checkpoint:
            save_checkpoint(args.checkpoint, network, optimizer, progress.epoch, history)
        if args.target_test_loss is not None and \
                evaluate(network, test_set, loss="mse", batch_size=args.batch_size) < args.target_test_loss:
            solved = (progress.sequences_seen, progress.seconds)
            break
    bar.close()
    print(f"final training loss {history[-1]:.6g} after {len(history)} steps")
    if test_set is not None:
        print(f"test loss {evaluate(network, test_set, loss='mse', batch_size=args.batch_size):.6g} "
              f"on {len(test_set)} held-out sequences")
    if args.target_test_loss is not None:
        print(_solve_line("lstmgen", args.target_test_loss, solved))
    if args.backend == "gpu":
        import cupy

        # The pool keeps the blocks it allocated, so what it holds now is the peak (unless a
        # --memory-limit-mib cap made it free cached blocks; then the cap bounds the peak).
        print(f"peak GPU memory (held by CuPy's pool): {cupy.get_default_memory_pool().total_bytes() / 2**20:.1f} MiB")
    curves = {f"lstmgen ({args.backend})": history}
    if args.compare_torch:
        curves["torch.nn.LSTM"] = _compare_with_torch(args, spec, initial_state, train_set, test_set, history, solved)
    if args.plot:
        from lstmgen.plots import plot_loss_curve

        level, label = _TASK_BASELINE[args.task] or (None, "")
        plot_loss_curve(curves, args.plot, f"{spec.name}, {args.task}, T={args.steps}", level, label)
        print(f"wrote {args.plot}")
    return 0


def _check_arguments(args, spec) -> None:
    if spec.layers[0].input_size != _TASK_INPUTS[args.task]:
        raise SpecError(
            f"task {args.task!r} feeds {_TASK_INPUTS[args.task]} feature(s) per step but {args.spec} layer 1 "
            f"has input_size {spec.layers[0].input_size}: set input_size = {_TASK_INPUTS[args.task]}"
        )
    if args.resume and not args.checkpoint:
        raise SpecError("--resume needs --checkpoint PATH: it says which checkpoint to continue from")
    if args.target_test_loss is not None and not args.test_samples:
        raise SpecError("--target-test-loss needs --test-samples N: the target is measured on held-out data")


def _solve_line(who: str, target: float, solved) -> str:
    if solved is None:
        return f"{who}: test loss never went below {target:g}"
    return f"{who}: test loss below {target:g} after {solved[0]} training sequences, {solved[1]:.2f} s"


def _compare_with_torch(args, spec, initial_state, train_set, test_set, history, solved):
    """The same run with torch.nn.LSTM (cuDNN on the GPU backend); prints how the curves agree."""
    import torch

    from lstmgen.bench.torch_training import evaluate_torch, train_torch

    device = "cuda" if args.backend == "gpu" else "cpu"
    dtype = torch.float64 if args.backend == "reference" else getattr(torch, spec.layers[0].dtype)
    torch_solved = []

    def stop_when_solved(epoch, network, seconds):
        if args.target_test_loss is None:
            return False
        if evaluate_torch(network, test_set, batch_size=args.batch_size, device=device, dtype=dtype) < args.target_test_loss:
            torch_solved.append((epoch * len(train_set), seconds))
            return True
        return False

    torch_history, _ = train_torch(spec, initial_state, train_set, epochs=args.epochs, batch_size=args.batch_size,
                                   seed=args.seed, optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
                                   clip=args.clip, device=device, dtype=dtype, epoch_callback=stop_when_solved)
    common = min(len(history), len(torch_history))
    ours, theirs = (np.asarray(values[:common]) for values in (history, torch_history))
    print(f"torch.nn.LSTM ({device}, {dtype}): final training loss {torch_history[-1]:.6g}; loss curves differ by "
          f"at most {float(abs(ours - theirs).max() / abs(theirs).max()):.2e} of the largest loss over {common} steps")
    if args.target_test_loss is not None:
        print(_solve_line("torch.nn.LSTM", args.target_test_loss, torch_solved[0] if torch_solved else None))
        if solved and torch_solved:
            print(f"time-to-solve ratio torch/lstmgen: {torch_solved[0][1] / solved[1]:.2f}x")
    return torch_history

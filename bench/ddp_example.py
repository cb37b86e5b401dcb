"""Training lstmgen.torch.LSTM with PyTorch's DistributedDataParallel (NCCL), one process per GPU.

    torchrun --standalone --nproc_per_node 1 -m lstmgen.bench.ddp_example --out one.json
    torchrun --standalone --nproc_per_node 2 -m lstmgen.bench.ddp_example --out two.json

The global batch is fixed and split evenly over the ranks, every rank draws the same data
(seeded) and takes its slice, and DDP averages the gradients, so 1 and 2 GPUs follow the
same loss curve up to the order of floating-point sums. Rank 0 writes the per-step losses
and the mean step time to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.distributed as dist

import lstmgen.torch as lt
from lstmgen.tasks import adding_problem


class Model(torch.nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.lstm = lt.LSTM(2, hidden, batch_first=True)
        self.head = torch.nn.Linear(hidden, 1)

    def forward(self, x):
        output, _ = self.lstm(x)
        return self.head(output[:, -1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100, help="training steps")
    parser.add_argument("--global-batch", type=int, default=256)
    parser.add_argument("--length", type=int, default=50, help="sequence length T")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # never NVLink multicast on shared hosts
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.global_batch % world:
        raise SystemExit(f"--global-batch {args.global_batch} must divide evenly over {world} GPUs")
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    torch.cuda.set_device(local_rank)
    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = torch.nn.parallel.DistributedDataParallel(Model(args.hidden).cuda(), device_ids=[local_rank])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    local = args.global_batch // world
    rng = np.random.default_rng(0)
    losses, times = [], []
    for _ in range(args.steps):
        x, y = adding_problem(args.global_batch, args.length, rng)
        x = torch.from_numpy(x[rank * local:(rank + 1) * local]).cuda()
        y = torch.from_numpy(y[rank * local:(rank + 1) * local]).cuda()
        torch.cuda.synchronize()
        start = time.perf_counter()
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        global_loss = loss.detach().clone()
        dist.all_reduce(global_loss)
        losses.append(global_loss.item() / world)
    if rank == 0:
        with open(args.out, "w") as file:
            json.dump({"world_size": world, "losses": losses, "step_seconds": float(np.median(times[5:]))}, file)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

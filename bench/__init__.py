"""Benchmark of lstmgen's layers against cuDNN (torch.nn.LSTM) in one process: `python -m lstmgen.bench`."""

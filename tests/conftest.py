"""Shared test setup."""

import torch

# The tests' tensors are tiny: one thread is faster than two fighting over them,
# and results stay reproducible within a run either way.
torch.set_num_threads(1)

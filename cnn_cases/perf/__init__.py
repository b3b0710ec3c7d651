"""Performance work: timing, throughput, convolution profiles, gradients.

`timing` times any callables, JAX or PyTorch, alone or alternating; `workload` builds a
model's jitted train step; the same CIFAR net in PyTorch is `cnn_cases.interop.pytorch`
(imported only when used: PyTorch is optional); `throughput`, `convs` and `gradients` are
the measurements behind scripts/benchmark.py, scripts/profile_convs.py and
scripts/grad_accuracy.py, and `cli` the command-line flags those scripts share.
"""

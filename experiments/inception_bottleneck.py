"""Inception modules with and without 1x1 bottlenecks (Szegedy et al. 2015, Figure 2).

    python -m experiments.inception_bottleneck                 # preset from the backend
    python -m experiments.inception_bottleneck --config=experiments/inception_bottleneck.py:cpu \\
        --config.dataset=cifar10_jpeg --config.data_dir=../shared/tfds [--config.equal_macs]

Prints the lecture's module arithmetic, then trains one CIFAR-scale Inception network twice
from the same module widths, naive modules vs bottleneck modules (with --config.equal_macs, a
third: the bottleneck network widened to the naive one's multiply-adds). Writes results.json,
module_arithmetic.json, curves.csv and inception_bottleneck.png to --workdir; rerunning
resumes. `--config.seeds=N`: N seeds of each network as one vmapped program, mean ± std.
Presets and keys: `cnn_cases.studies.inception_bottleneck.get_config`.
"""

from cnn_cases.studies import inception_bottleneck as study
from experiments import common

get_config = study.get_config  # what --config=experiments/inception_bottleneck.py:PRESET reads

if __name__ == "__main__":
    common.main(study, __file__)

"""LeNet-5 (LeCun et al. 1998): classic (tanh, average pooling) vs modern (ReLU, max pooling).

    python -m experiments.lenet5                               # preset from the backend
    python -m experiments.lenet5 --config=experiments/lenet5.py:cpu --config.data_dir=../shared/tfds
    python -m experiments.lenet5 --config.dataset=fashion_mnist --config.data_dir=../shared/tfds \\
        --workdir=runs/lenet5_fashion

Prints the per-layer shape table, trains both variants on mnist (default) or fashion_mnist
and writes results.json, curves.csv and lenet5.png to --workdir; rerunning resumes.
`--config.seeds=N`: N seeds of each variant as one vmapped program, mean ± std. Presets
and keys: `cnn_cases.studies.lenet5.get_config`.
"""

from cnn_cases.studies import lenet5 as study
from experiments import common

get_config = study.get_config  # what --config=experiments/lenet5.py:PRESET reads

if __name__ == "__main__":
    common.main(study, __file__)

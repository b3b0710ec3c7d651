"""Why ResNets work, shown on trained networks: the lecture's identity argument, He et al.'s
Figure 7 (layer responses) and per-layer gradient norms, plain nets against ResNets.

    python -m experiments.why_resnets                          # preset from the backend
    python -m experiments.why_resnets --config.dataset=cifar10_jpeg --config.data_dir=../shared/tfds
    python -m experiments.why_resnets --config.from_workdir=runs/resnet_depth   # reuse its nets

Trains plainD/resnetD (or reads them from a resnet_depth workdir of the same recipe), appends
W = 0, b = 0 blocks and checks the ResNet's function is unchanged while the plain net's
collapses, trains both deeper nets on, and probes responses and gradients. Writes
results.json, curves.csv and why_resnets.png to --workdir. Presets and keys:
`cnn_cases.studies.why_resnets.get_config`.
"""

from cnn_cases.studies import why_resnets as study
from experiments import common

get_config = study.get_config  # what --config=experiments/why_resnets.py:PRESET reads

if __name__ == "__main__":
    common.main(study, __file__)

"""Plain nets get worse as they get deeper; ResNets do not (He et al. 2016, Figure 6).

    python -m experiments.resnet_depth                       # preset from the backend
    python -m experiments.resnet_depth --config=experiments/resnet_depth.py:cpu \\
        --config.dataset=cifar10_jpeg --config.data_dir=../shared/tfds
    python -m experiments.resnet_depth --config=experiments/resnet_depth.py:full \\
        --config.depths=20,32,44,56,110
    python -m experiments.resnet_depth --config.seeds=3      # seeds 0-2: mean ± std

Trains plainD and resnetD for every depth D and writes results.json, curves.csv and
resnet_depth.png to --workdir (default runs/resnet_depth). Rerunning with the same --workdir
skips finished nets and resumes an unfinished one. `--config.seeds=N` trains seeds
seed .. seed+N-1 of every net as one vmapped program and reports mean ± standard deviation,
with the verdict against the seeds' spread. Presets (cpu, smoke, colab, full) and every key
that --config.KEY=VALUE can override: `cnn_cases.studies.resnet_depth.get_config`.
"""

from cnn_cases.studies import resnet_depth as study
from experiments import common

get_config = study.get_config  # what --config=experiments/resnet_depth.py:PRESET reads

if __name__ == "__main__":
    common.main(study, __file__)

"""GoogLeNet's auxiliary classifiers: trained with and without them (Szegedy et al. 2015).

    python -m experiments.googlenet_aux                        # preset from the backend
    python -m experiments.googlenet_aux --config=experiments/googlenet_aux.py:cpu \\
        --config.dataset=cifar10_jpeg --config.data_dir=../shared/tfds
    python -m experiments.googlenet_aux --config.without=zero_weight

Trains GoogLeNetCifar with its side classifiers and without them; prints each head's test
accuracy along the run and the final table; writes results.json, curves.csv and
googlenet_aux.png to --workdir; rerunning resumes. `--config.seeds=N`: N seeds of each
variant as one vmapped program, mean ± std. Presets and keys:
`cnn_cases.studies.googlenet_aux.get_config`.
"""

from cnn_cases.studies import googlenet_aux as study
from experiments import common

get_config = study.get_config  # what --config=experiments/googlenet_aux.py:PRESET reads

if __name__ == "__main__":
    common.main(study, __file__)

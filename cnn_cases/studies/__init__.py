"""The case studies that train: one module per study, named as its launcher and notebook.

    resnet_depth          plain nets vs ResNets at several depths (He et al. 2016, Figure 6)
    inception_bottleneck  Inception modules with and without 1x1 bottlenecks
    googlenet_aux         GoogLeNet trained with and without its auxiliary classifiers
    lenet5                LeNet-5 classic (tanh, average pooling) vs modern (ReLU, max pooling)
    why_resnets           the identity argument on trained nets, He et al. Figure 7, gradients

Every study module has the same small interface:

    NAME, PRESETS
    get_config(preset)                the study's config ("cpu", "smoke", "colab", "full"; None:
                                      the backend's, chosen when the run starts)
    validate(config)                  one-line ValueError for a config it cannot run
    variant_configs(config)           the training config of each variant
    run(config, workdir)              trains every variant, writes results.json, curves.csv
                                      and NAME.png into workdir, returns the results
    summary(results, workdir)         the text a launcher prints at the end (table, verdict)

and may have `expected_minutes(config)` where its time depends on more than the preset.
The pieces they share are in `common`; no study imports another.
"""

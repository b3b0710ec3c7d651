"""The training engine: configs and presets, the train loop and its steps, the run
directory, the device mesh."""

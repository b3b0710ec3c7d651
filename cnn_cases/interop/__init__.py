"""Other frameworks: torchvision's weights, ImageNet inference, the PyTorch reference nets."""

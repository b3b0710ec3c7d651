"""What the models are made of: costs, published counts, the lecture's worked examples, probes
of trained nets."""

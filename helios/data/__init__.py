"""Built-in data: MNIST-C style corruptions and the demo corpora."""

"""Dataset builders, as `keras.datasets`: `mnist` (MNIST digit loaders), `flash_mnist` (toy videos).

`python -m tfrecords.flash_mnist` is the command line around `flash_mnist.generate_dataset`.
"""

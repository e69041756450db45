"""Sample quality offline: the shipped digit classifier (``classifier``), what it was trained on
(``classifier_data``), FID-MNIST and the other metrics (``metrics``), and the `fastgan eval` /
`fastgan classifier` commands (``cli``)."""

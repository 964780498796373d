"""SampleSift: train faster by selecting the training samples that matter."""

__version__ = "0.1.0"

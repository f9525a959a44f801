"""anomalib_lite: unsupervised image anomaly detection and localisation, simply and exactly."""

__version__ = "0.1.0"

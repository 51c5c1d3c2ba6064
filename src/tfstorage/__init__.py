"""TensorFleet Storage: an indexed, checksummed storage service for ML teams."""

__version__ = "0.1.0"

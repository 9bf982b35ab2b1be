"""Helios: a workflow-orchestrated model pipeline on Prefect, ONNX Runtime and MLflow."""
__version__ = "0.1.0"

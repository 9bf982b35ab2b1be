"""The file MLflow runs to build the served Helios model ("models from code", see flows/serving.py)."""
from mlflow.models import set_model

from flows.serving import HeliosModel

set_model(HeliosModel())

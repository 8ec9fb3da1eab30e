"""The entry MLflow runs to load a kddocre model (models from code: registry.py logs this file, so
the model's code travels as code, never as a pickle)."""
import mlflow

from kddocre_ray.registry import TriplesModel

mlflow.models.set_model(TriplesModel())

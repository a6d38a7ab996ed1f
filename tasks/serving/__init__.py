"""MLflow pyfunc wrappers of the registered models (MLflow "models from code" files).

Each file defines a model and hands it to mlflow.models.set_model; MLflow
copies the file next to the Hugging Face checkpoint it serves.
"""

"""The classifier's MLflow pyfunc, as code: MLflow runs this file to build the model it loads
(models from code), so the registry stores no pickled Python object."""

from mlflow.models import set_model

from models.served.classifier import PyfuncModel

set_model(PyfuncModel())

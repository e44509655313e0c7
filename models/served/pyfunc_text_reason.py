"""The contact-reason classifier's MLflow pyfunc, as code: MLflow runs this file to build the
model it loads (models from code), so the registry stores no Python object of the wrapper."""

from mlflow.models import set_model

from models.served.text_reason import ReasonPyfunc

set_model(ReasonPyfunc())

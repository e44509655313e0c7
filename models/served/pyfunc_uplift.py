"""The uplift model's MLflow pyfunc, as code: MLflow runs this file to build the model it
loads (models from code), so the registry stores no pickled Python object."""

from mlflow.models import set_model

from models.served.uplift import UpliftPyfunc

set_model(UpliftPyfunc())

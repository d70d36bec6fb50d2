"""MLflow models-from-code entry point of the LLM chain.

``log_llm_model`` logs this file with ``mlflow.pyfunc.log_model(python_model=<this path>,
model_config=...)``. MLflow runs it when the model is loaded; ``set_model`` hands over the chain,
whose ``load_context`` validates the ``model_config`` (prompt id and alias, checks). The chain code
itself lives in :mod:`mlops_assets.llm.chain` and :mod:`mlops_assets.llm.registry`, so it
is versioned and tested with the package.
"""

from mlflow.models import set_model

from mlops_assets.llm.registry import LLMChainModel

set_model(LLMChainModel())

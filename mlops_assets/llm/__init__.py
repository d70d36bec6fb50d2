"""The LLM chain (LangGraph over the openai client) as a model: the wrapper, its MLflow models-from-code pyfunc, and its registration and serving alias."""

"""The prompt library people edit, its records and MLflow prompt-registry mirror, the automatic evaluators (toxicity, groundedness, golden sets), the approval workflow, and the LLM usage log."""

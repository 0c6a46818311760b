"""YAML flows: the language (model, durations, inputs, templating, validation) and, beside it,
the runner that carries a flow's executions out. `docs/flows.md` is the reference a user reads."""

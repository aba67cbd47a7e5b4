"""Models built on tensorlite: a GPT language model (``models.gpt``) and the tools to train and
sample it."""

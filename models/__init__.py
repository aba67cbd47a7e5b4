"""Models built on tensorlite: a GPT language model (``tensorlite.models.gpt``) and the tools to
train and sample it. The folder ``models/`` of the repository, installed as ``tensorlite.models``
(setup.cfg); importing it imports tensorlite first, as for any subpackage."""

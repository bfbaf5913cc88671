"""Public test fakes and local server starters.

- :class:`ScriptedLLM` (scripted): a real OpenAI-compatible HTTP server on 127.0.0.1 whose replies you script.
- ``chroma_server``: start a local chroma server; ``server_process``: run ``memstore serve`` as a child.
"""

from memstore.testing.scripted import *  # noqa: F403
from memstore.testing.scripted import __all__  # noqa: F401

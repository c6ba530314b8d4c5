"""The models this process serves, in three parts, one job each.

- ``lookup``: the models and versions as requests find them (``ServedModel``, ``Loaded``).
- ``following``: the ``Registry``, kept in step with the repository (the poll, config.yaml,
  the repository API's loads and unloads).
- ``building``: a published version folder made into a runnable, warmed version.

The repository API's shared state file is ``service.admin.SharedState``, handed to the
``Registry``; the V2 model names are the V2 protocol's (``service.protocols.v2_names``), built
again when ``Registry.generation`` changes.
"""

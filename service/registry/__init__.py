"""The models this process serves, in three parts, one job each.

- ``lookup``: the models and versions as requests find them (``ServedModel``, ``Loaded``).
- ``following``: the ``Registry``, kept in step with the repository (the poll, config.yaml,
  the repository API's loads and unloads).
- ``building``: a published version folder made into a runnable, warmed version.

The repository API's shared state file is ``service.admin.SharedState``; the V2 model names
are ``service.protocols.v2_names``.
"""

"""The HTTP service: one BentoML service serving every model of the local model repository.

A request travels top to bottom through: ``connection`` (HTTP limits below ASGI) -> ``app``
(one match in the route table of ``routes``; ``native`` and ``protocols`` for V2 and TF
Serving) -> ``inference`` (one request's life: read, decode, validate, batch, run, encode)
-> ``interfaces`` (each input kind and answer; ``inputs`` does the body, images, tensors
and records) -> ``batching`` (adaptive batches) -> ``backends`` (ONNX Runtime or
SavedModel). ``models`` keeps the served versions in step with the repository, described by
``descriptor``; ``service`` wires it all into BentoML.
"""

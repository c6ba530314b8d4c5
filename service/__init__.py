"""The HTTP service: one BentoML service serving every model of the local model repository.

A request travels top to bottom through: ``fastpath``/``routes`` (HTTP; ``protocols`` for V2
and TF Serving) -> ``inference`` (one request's life) -> ``inputs`` (decode and
validate) -> ``batching`` (adaptive batches) -> ``backends`` (ONNX Runtime or SavedModel)
-> ``outputs`` (JSON or PNG). ``registry`` loads and warms the models; ``service`` wires it
into BentoML.
"""

"""Standard inference protocols (Open Inference Protocol V2, TensorFlow Serving REST) over
the same models, batchers, validation and metrics as the native endpoints."""

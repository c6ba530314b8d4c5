"""One module per kind of trouble: fuzzing, hostile input, load, faults."""

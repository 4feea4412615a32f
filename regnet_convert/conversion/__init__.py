"""From a checkpoint's tensors to a checked native RegNet file: architecture finding, conversion, atomic writes."""

"""Reading checkpoints without running pickled code, and naming their tensors natively (pycls, mmcls)."""

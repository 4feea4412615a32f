"""ImageNet validation: data layouts, the reference preprocessing, the loader, top-1/top-5 counting, the report."""

"""Mixed-adapter batch math: reference, torch and Triton backends over one AdapterBatch per step."""

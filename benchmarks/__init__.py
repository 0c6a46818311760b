"""Side-by-side benchmarks: Flowmill against a bare Litestar handler, in one run."""

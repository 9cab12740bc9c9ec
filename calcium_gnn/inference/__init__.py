"""Statistics of a fitted model: Gauss-Newton (Laplace) intervals, random-effects pooling of the feeds,
anomaly scores. Plain tensors in, result objects out; no figures or files (those are drawn by
:mod:`calcium_gnn.evaluation`)."""

"""A trained (or imported) run put to use (its run directory: `alexnet_tf.run_dir`):

- `evaluation`: top-1 / top-5 error of a checkpoint, centre crop or ten crops;
- `saved_model`: the TF Serving SavedModel (`serving_default`, `serving_pixels`, `features`);
- `session_loader`: a SavedModel loaded and run as TF Serving does (the session loader);
- `retrieval`: fc7 features of a split and their nearest neighbours (the paper's Figure 4).
"""

"""Pictures of data, embeddings, selections and results.

``toolkit.viz.images`` makes plain NumPy/Pillow images (the CLI's PNGs); the other modules
make plotly figures for the app and notebooks from toolkit results.
"""

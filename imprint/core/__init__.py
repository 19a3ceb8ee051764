"""The bottom layer, known to every other: errors, declared settings and their registries, input checks, presets,
the machine (devices, threads, memory), atomic writes, tagged embeddings, the support set read in blocks, and
nearest-neighbour search. Nothing here knows of imprinting's stages, files or commands."""

"""File formats, each in the module that owns it: classifier files, embeddings files and stores, the embedding
cache, the checks of npz members, text tables (CSV, JSON), PNG pictures and the guard that keeps a user's files
from being overwritten."""

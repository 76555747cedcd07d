"""Defaults of the explorer (the CLI takes its option defaults from here)."""
HOST = "127.0.0.1"  # local only unless --host says otherwise
PORT = 8765
THUMB_SIZE = 128  # longest side of a cached thumbnail, in pixels
THUMB_QUALITY = 85  # JPEG quality of thumbnails
N_EXEMPLARS = 16  # top-k and bottom-k exemplars a unit page shows
N_CONCEPT_EXAMPLES = 12  # lens concept examples a unit page shows
N_SIMILAR = 8  # most similar units shown per scope (same layer, other layers, each other atlas)
SEARCH_TOP = 24  # units a search returns
PAGE_SIZE = 120  # unit cards per page of a layer view
MAX_UPLOAD_BYTES = 8 * 2**20  # per image-probe upload
MAX_UPLOAD_FILES = 8
MAX_CONCEPTS = 200  # concepts of one label request
CACHE_SECONDS = 86400  # Cache-Control max-age of thumbnails, images and figures

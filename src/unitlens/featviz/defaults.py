"""Defaults of feature visualisation (the CLI takes its option defaults from here).

The recipe is Olah et al. (2017) as Lucid and Lucent implement it: a Fourier-space image with a 1/f spectrum
scaling and decorrelated colours, squashed by a sigmoid; at every step the standard robustness transforms (pad
12 px with grey, jitter up to 8 px, scale 0.9–1.1, rotate −10°…10°, jitter up to 4 px); Adam at 0.05.
"""
STEPS_ACCELERATOR = 512  # optimisation steps on a GPU (Lucent's default threshold)
STEPS_CPU = 128  # ... on a CPU: recognisable coarse structure at a quarter of the cost
SIZE_ACCELERATOR = 224  # image side on a GPU (an ImageNet model's input)
SIZE_CPU = 128  # ... on a CPU (Lucent's default image size)
BATCH_ACCELERATOR = 288  # images per optimisation batch on a GPU (16 units of 2 x 9 images)
BATCH_CPU = 36  # ... on a CPU (2 units of 2 x 9 images)
PER_SIDE = 9  # images per unit and direction (MIS's K explanations per side)
LEARNING_RATE = 0.05  # Adam (Lucent's default)
SEED = 0
DIVERSITY = 0.0  # weight of the diversity term; 0 turns it off
MIN_SIZE, MAX_SIZE = 16, 1024  # image side in pixels
MAX_STEPS = 100_000
MAX_PER_SIDE = 64
FIGURE_UNITS = 4  # units on a layer's sheet of visualisations beside natural exemplars
FIGURE_IMAGES = 5  # images of each kind and direction per unit on a sheet

# the robustness transforms (Lucent's standard_transforms)
PAD = 12  # pixels of grey (0.5) added on every side
PAD_VALUE = 0.5
JITTER_FIRST = 8  # translation by 0..7 pixels in x and y before scaling
JITTER_LAST = 4  # translation by 0..3 pixels after rotating
SCALES = tuple(1 + (i - 5) / 50 for i in range(11))  # 0.90, 0.92, ..., 1.10
ANGLES = tuple(range(-10, 11)) + (0,) * 5  # degrees; 0 more often

# the parameterisation (Lucid/Lucent)
INIT_SD = 0.01  # standard deviation of the initial spectrum
DECAY_POWER = 1.0  # spectrum scaling 1 / f**decay_power
MAGIC = 4.0  # Lucid's divisor of the inverse FFT ("reduces saturation")
COLOR_CORRELATION_SVD_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

METRIC = "mis_featviz"  # MIS with feature visualisations as explanations
METRIC_ACCURACY = "mis_featviz_accuracy"

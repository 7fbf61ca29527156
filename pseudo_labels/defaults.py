"""Every default parameter of the tool, in one place.

Values that reproduce the reference repository (qbit-glitch/monocular_ups) say so.
CLI flags, library functions, the sweep and the demo all read them from here.
"""

# --- synthetic city
SYNTH_SIZE = (1024, 2048)  # (H, W), Cityscapes resolution
SYNTH_SPLIT = "val"

# --- features (stage 1)
FEATURE_INPUT_SIZE = (322, 644)  # (H, W): short side 322, both multiples of 14 (reference)
PATCH_SIZE = 14
CAUSE_CROP = 322  # sliding-window crop of the CAUSE-TR path (reference)
CAUSE_STRIDE = 161
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BATCH_SIZE = 4

# --- clustering (stage 2)
K = 80
SAMPLES_PER_IMAGE = 2000  # reference: at most 2000 patches per image
SEED = 42  # reference random_state
SKLEARN_KMEANS = dict(batch_size=10000, max_iter=300, n_init=3, random_state=42)  # reference settings

# --- depth-guided splitting (stage 5), reference defaults
GRAD_THRESHOLD = 0.20  # tau
MIN_AREA = 1000  # A_min, pixels at the working resolution
DEPTH_BLUR_SIGMA = 1.0
DILATION_ITERS = 3
CONNECTIVITY = 4
STUFF_MIN_AREA = 64
MIN_NEW_PIXELS = 10  # placement: an instance needs this many not-yet-taken pixels
WORK_RESOLUTION = (512, 1024)  # reference working resolution (H, W)

# --- sweep (stage 8): the grid contains the reference's best point (0.20, 1000)
SWEEP_GRAD_THRESHOLDS = (0.05, 0.10, 0.15, 0.20, 0.30)
SWEEP_MIN_AREAS = (250, 500, 1000, 2000)

# --- evaluation
PROTOCOL = "standard"
REFERENCE_EVAL_RESOLUTION = (512, 1024)
REFERENCE_GT_STUFF_MIN_AREA = 64
REFERENCE_GT_THING_MIN_AREA = 10

# --- weakly supervised (DEAL)
DEAL_MU = 2.5

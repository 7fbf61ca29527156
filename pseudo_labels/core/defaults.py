"""Every default parameter of the tool, in one place.

Values that reproduce the reference repository (qbit-glitch/monocular_ups) say so.
CLI flags, library functions, the sweep and the demo all read them from here.
"""

# --- synthetic city
SYNTH_SIZE = (1024, 2048)  # (H, W), Cityscapes resolution
SYNTH_SPLIT = "val"
SYNTH_LAYOUTS = ("official", "extended")  # official: what the four zips hold; extended: + trainIds, panoptic GT
SYNTH_LAYOUT = "official"  # the synth command's default
SYNTH_LAYOUT_LIBRARY = "extended"  # write_synthetic_city / [synth]: the test fixtures and the demo read the extras
GT_CACHE_DIRNAME = "gt_cache"  # <output folder>/gt_cache: ground truth made by cityscapesscripts

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
MIN_AREA = 1000  # A_min, pixels at the working resolution (the reference's value at its 512x1024)
DEPTH_BLUR_SIGMA = 1.0
DILATION_ITERS = 3
CONNECTIVITY = 4
STUFF_MIN_AREA = 64
MIN_NEW_PIXELS = 10  # placement: an instance needs this many not-yet-taken pixels
REFERENCE_WORK_RESOLUTION = (512, 1024)  # the reference's working resolution (H, W): half of 1024x2048
WORK_SCALE = 0.5  # default working resolution: this fraction of each image's size (Cityscapes: 512x1024)
WORK_RESOLUTION = None  # None: WORK_SCALE of each image's size; an explicit (H, W) wins
CC_MIN_AREA = 10  # components only (depth "none"): the reference's cc_only_instances min_area
DEPTH_MODES = ("edges", "none")  # instances: split at depth edges, or connected components alone

# --- sweep (stage 8): the grid contains the reference's best point (0.20, 1000)
SWEEP_GRAD_THRESHOLDS = (0.05, 0.10, 0.15, 0.20, 0.30)
SWEEP_MIN_AREAS = (250, 500, 1000, 2000)  # pixels at 512x1024, scaled like MIN_AREA


def work_resolution(image_size: tuple[int, int], resolution: tuple[int, int] | None = WORK_RESOLUTION
                    ) -> tuple[int, int]:
    """The working (H, W) of the depth-guided splitting for an image of ``image_size`` (H, W):
    ``resolution`` when given, else :data:`WORK_SCALE` of the image (rounded, at least 1 px),
    which is the reference's 512x1024 for a 1024x2048 Cityscapes frame."""
    if resolution is not None:
        return int(resolution[0]), int(resolution[1])
    h, w = image_size[:2]
    return max(1, int(round(h * WORK_SCALE))), max(1, int(round(w * WORK_SCALE)))


def scaled_min_area(work: tuple[int, int], min_area: int = MIN_AREA) -> int:
    """A_min in pixels at the working resolution ``work`` (H, W) for a value stated at the reference's
    512x1024: scaled by the ratio of the pixel counts, rounded, at least 1 (1000 at 512x1024 is 250 at
    256x512 and 4000 at 1024x2048). Used for the defaults only; an explicit min_area is taken as given."""
    ref = REFERENCE_WORK_RESOLUTION[0] * REFERENCE_WORK_RESOLUTION[1]
    return max(1, int(round(min_area * work[0] * work[1] / ref)))

# --- evaluation
PROTOCOL = "standard"
REFERENCE_EVAL_RESOLUTION = (512, 1024)
REFERENCE_GT_STUFF_MIN_AREA = 64
REFERENCE_GT_THING_MIN_AREA = 10

# --- weakly supervised (DEAL)
DEAL_MU = 2.5

# --- depth (stage 4) [depth helper]
DEPTH_NORMALIZE = "minmax"  # per-image min-max to [0, 1], as the reference stores its maps
DISPARITY_FILL = "nearest"  # invalid disparity (p <= 1) takes the nearest valid pixel's depth
SPIDEPTH_PREPROCESS = "spidepth"  # "spidepth" (crop ego car, as SPIdepth evaluates) or "full-frame" (reference)
SPIDEPTH_INPUT_SIZE = (320, 1024)  # (H, W) of the released Cityscapes model (args_cvnXt_H_cityscapes_finetune_eval.txt)
SPIDEPTH_CITYSCAPES_CROP_FRACTION = 0.25  # bottom rows removed (ego car): SPIdepth keeps h * 3 // 4
SPIDEPTH_FLIP = True  # average with the mirrored prediction (test_simple_SQL_config.py)
DEPTH_ANYTHING_MAX_RATIO = 100.0  # relative disparity -> depth: far clip at 100x the nearest depth

# --- weakly supervised CAM pseudo-labels (issue 8: pseudo_labels.stages.weak, train-cam, generate-cam-pseudolabels)
# head, lr, epochs and grids: the settings of benchmarks/deal_evidence.py (reports/weak_deal.md)
CAM_EPOCHS = 40
CAM_LR = 5e-2
CAM_WEIGHT_DECAY = 1e-4
CAM_BATCH_SIZE = 8
CAM_POOLING = "lse"  # image logit from the class maps: gap (global average) or lse (smooth max)
CAM_HIDDEN = 64  # 0: linear 1x1 conv head; > 0: 1x1 conv - ReLU - 1x1 conv with this width
CAM_TAGS_MIN_PIXELS = 64  # --tags-from-gt: a class is a tag when it has >= this many GT pixels
CAM_BG_THRESHOLD = 0.0  # normalised CAM score at or below which a pixel is background; 0 suits the
# Cityscapes label space (no background class: best in reports/weak_deal.md); for --label-space voc sweep it
CAM_DEAL_WEIGHT = 0.0
CAM_LABEL_SPACE = "cityscapes"
CAM_REFINE_BAND = 8  # px at image resolution: depth-edge snapping moves boundaries at most this far
SWEEP_CAM_BG_THRESHOLDS = (0.0, 0.05, 0.15, 0.3, 0.45)
SWEEP_DEAL_WEIGHTS = (0.0, 0.01, 0.03, 0.1, 0.3)

# --- clustering / generate-overclustered-semantics (stage 2-3), added by the clustering module
KMEANS_BACKEND = "auto"  # faiss when installed, else torch
KMEANS_N_ITER = 20  # Lloyd iterations of the faiss / torch backends
KMEANS_MAX_POINTS_PER_CENTROID = 1000  # faiss / torch fit on a random subsample of at most k * this
KMEANS_INIT_SAMPLE = 20000  # k-means++ seeding runs on a random sample of at least this many points
KMEANS_INIT_PER_CLUSTER = 40  # ... or this many per cluster, whichever is larger
# fit sample budget over a whole split (memory bound, not growing with the images): the default is
# max(this, k * KMEANS_MAX_POINTS_PER_CENTROID) vectors, spread evenly over the images; --max-samples 0: no cap
MAX_FIT_SAMPLES = 100_000
SAMPLE_FILTER = "uniform"  # label-free; "gt-nonvoid" is the reference's GT-filtered sampling
UPSAMPLE = "similarity"  # bilinear similarities then argmax; "labels" = reference nearest path
MAPPING = "majority"

# --- export / visualize / report (exports helper)
CUPS_SCALE = 0.625  # visinf/cups cups/config.py DATA.SCALE: labels stored at 0.625 of the image (640x1280)
CUPS_THING_STUFF_THRESHOLD = 0.08  # visinf/cups cups/config.py DATA.THING_STUFF_THRESHOLD
VIS_TILE_WIDTH = 512  # width of one panel tile (pixels)
VIS_SHEET_COLUMNS = 4
VIS_SHEET_MAX_IMAGES = 48
VIS_OVERLAY_ALPHA = 0.6
VIS_N_PANELS = 8

# --- CRM student (train-crm / generate-crm-pseudolabels); where a value comes from CRM it says so
CRM_MASKING = "random-complementary"  # CRM configs INPUT.MASK.STRATEGY 'rand_comp' (RGB-T data sets)
CRM_MASK_PATCH = 32  # CRM MFNet config INPUT.MASK.PATCH_SIZE
CRM_MASK_RATIO = 0.5  # CRM MFNet config INPUT.MASK.RATIO
# CRM uses SDC / SDN weights 1 on the queries' class logits; on per-pixel logits weight 1 dominated the
# cross-entropy and hurt (thermal-only predictions collapsed to one class), 0.1 helped: reports/rgbt_crm.md
CRM_SDC_WEIGHT = 0.1
CRM_SDN_WEIGHT = 0.1
CRM_MWS_WEIGHT = 1.0  # CRM MODEL.CRMLOSS.MWS_WEIGHT
CRM_BACKBONE = "tiny"
CRM_WIDTH = 16  # tiny encoder: channels at stride 4 (x2 at 8, x4 at 16)
CRM_DECODER_DIM = 32
CRM_EPOCHS = 20
CRM_BATCH_SIZE = 4
CRM_LR = 2e-3  # AdamW; CRM uses 1e-4 with ImageNet Swin weights, a random tiny net needs more
CRM_WEIGHT_DECAY = 1e-4
CRM_POLY_POWER = 0.9  # CRM SOLVER.LR_SCHEDULER_NAME WarmupPolyLR
CRM_SEED = 0

# --- DARTS evaluation (generate-darts-semantics --protocol official)
DARTS_PROBE_STEPS = 1000  # Adam steps of the cluster probe fitted after training (the release fits it alongside)
DARTS_PROBE_BATCH = 8  # images per probe step

# --- DynaSeg (generate-dynaseg-segments; reference values say so)
DYNASEG_N_BLOCKS = 3  # M (reference config custom_model_config_CNN_based.py)
DYNASEG_CHANNELS = 32  # p (reference: 100; 32 keeps a 512x1024 image at seconds per step on one core)
DYNASEG_MAX_LABELS = 100  # output channels = the most segments (reference qdy = 100)
DYNASEG_STEPS = 50  # T (the reference's per-image script allows up to 1000 with early stop)
DYNASEG_LR = 0.1  # SGD learning rate and momentum of the reference's per-image script (DynaSeg_SCF_BSD_VOC.py)
DYNASEG_MOMENTUM = 0.9
DYNASEG_MU = {"scf": 50.0, "fsf": 15.0}  # reference: SCF 50 / nLabels, FSF nLabels / 15
DYNASEG_K_RANGE = (3, 26)  # silhouette phase k = 3..26 (reference)
DYNASEG_SILHOUETTE_SAMPLE = 2000  # pixels in the silhouette (distance matrix 2000 x 2000)
DYNASEG_KMEANS_FIT_SAMPLE = 20000  # pixels the k-means of the silhouette phase is fitted on
DYNASEG_KMEANS_ITER = 20
DYNASEG_WORK_LONG_SIDE = 512  # the network trains at this long side (never upscaled)
DYNASEG_SEED = 0

# --- refine-semantics --method crf: dense CRF parameters of the CAUSE / STEGO crf scripts
CRF_ITERATIONS = 10
CRF_POS_XY_STD = 1.0
CRF_POS_WEIGHT = 3.0
CRF_BI_XY_STD = 67.0
CRF_BI_RGB_STD = 3.0
CRF_BI_WEIGHT = 4.0
CRF_GT_PROB = 0.7  # unary from hard labels (pydensecrf's unary_from_labels default use)

# --- thing/stuff rule of --thing-classes auto: "ours" (label-free, measured better on the synthetic city) or "reference"
THING_RULES = ("ours", "reference")
THING_RULE = "ours"

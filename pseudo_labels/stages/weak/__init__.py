"""Weakly-supervised semantic pseudo-labels from image-level tags + depth (issue 8).

- :mod:`.tags`  -- image-level multi-label tags (JSON / CSV files, or derived from GT)
- :mod:`.cam`   -- CAM classifier head on frozen ViT patch features, training loop, checkpoints
- :mod:`.deal`  -- Depth Edge Alignment Loss (Schmidt, Belagiannis, Nalpantidis 2025)
- :mod:`.masks` -- CAMs -> semantic label maps (background threshold, depth-edge snapping), scoring
- :mod:`.inputs` -- tags, depth (and DEAL depth edges), cached backbone features of a split
- :mod:`.training` -- ``CamTrainConfig`` + ``train_cam(config)``: what ``train-cam`` runs
- :mod:`.pseudolabels` -- ``CamLabelConfig`` + ``generate_cam_pseudolabels(config, options)``: what
  ``generate-cam-pseudolabels`` runs (label maps + ``cam_eval.json``, or the sweep)
- :mod:`.sweep` -- DEAL weight x seed x background threshold sweep, its summary, CSV and heatmap

Class index conventions: the CAM model has one channel per *foreground* class of the
label space: the 19 Cityscapes train classes (channel c = trainId c) or the 20 PASCAL VOC
object classes (channel c = VOC id c + 1; VOC id 0 is background, 255 ignore).
"""

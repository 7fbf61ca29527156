"""RGB-thermal pseudo-labels (MFNet / PST900 layouts).

- :mod:`.features` -- backbone features of RGB-T images, per modality
- :mod:`.darts` -- the DARTS fusion head and its correlation losses
- :mod:`.darts_semantics` -- DARTS codes -> k-means -> semantic pseudo-labels, day/night scores
- :mod:`.crm` -- the CRM student (complementary random masking, self-distillation)

Uses the semantic family's extractors, k-means and mapping, and the instance family's resizes.
"""

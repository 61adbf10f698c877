"""course_lib: the library behind the image-segmentation course.

One module per notebook, so a reader of notebook N finds its code in one place:

==========================  =========================================
notebook                    module
==========================  =========================================
01_pyramids_vs_fpn          :mod:`course_lib.pyramids`
02_resnet_fpn               :mod:`course_lib.models`
03_dice_iou                 :mod:`course_lib.losses`, :mod:`course_lib.metrics`
04_segmentation_assignment  :mod:`course_lib.data`, :mod:`course_lib.train`
(all)                       :mod:`course_lib.viz`, :mod:`course_lib.device`
(grading)                   :mod:`course_lib.probes` (the kernel's side of the grader's probes)
==========================  =========================================
"""

from course_lib.device import default_device, resolve_device, seed_everything

__version__ = "0.1.0"
__all__ = ["default_device", "resolve_device", "seed_everything", "__version__"]

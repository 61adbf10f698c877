"""Models of notebook 02: encoder (ResNet), decoder (FPN), head and full segmenters."""

from course_lib.models.backbone import (
    FEATURE_NAMES,
    FEATURE_STRIDES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ResNetBackbone,
)
from course_lib.models.fpn import FPN, SingleScaleNeck
from course_lib.models.heads import ConvGNReLU, SemanticFPNHead
from course_lib.models.segmentation import (
    ResNetFPN,
    Segmenter,
    SingleScaleSegmenter,
    build_model,
)

__all__ = [
    "FEATURE_NAMES", "FEATURE_STRIDES", "FPN", "IMAGENET_MEAN", "IMAGENET_STD", "ConvGNReLU", "ResNetBackbone", "ResNetFPN",
    "SemanticFPNHead", "Segmenter", "SingleScaleNeck", "SingleScaleSegmenter", "build_model",
]

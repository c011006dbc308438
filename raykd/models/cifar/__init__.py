"""CIFAR-style classifiers of the knowledge-distillation literature (the CRD / mdistiller "cifar" model zoo).

Tian et al., "Contrastive Representation Distillation", ICLR 2020 (sec. 4.1, appendix) fixed the teacher/student
pairs that later KD papers (DKD, FiGKD, ...) report on CIFAR-100 and TinyImageNet: CIFAR ResNets (He et al.,
2016, sec. 4.2), the bottleneck ResNet-50 with a CIFAR stem (CRD's ``ResNet50``, FiGKD's R50 -> MV2 teacher),
Wide ResNets (Zagoruyko & Komodakis, 2016), VGG with BatchNorm, MobileNetV2 at width 0.5,
ShuffleNetV1 (g=3) and ShuffleNetV2 (1x). Layers and widths follow those reference models, so parameter counts
agree and module names give the same ``state_dict`` keys as their released checkpoints.

Differences from the reference code, none of which changes a parameter or a 32x32 output: heads use global
adaptive average pooling (so 64x64 TinyImageNet input works), ``forward`` returns only the logits (features
come from :mod:`raykd.models.features`), and VGG applies its last ReLU inside each block so a hook on a
stage sees the activated map.

Every net follows timm's conventions: ``get_classifier()`` (the final ``nn.Linear``), ``num_features`` (its
input width), ``forward_features`` / ``forward_head``, plus ``stage_names``, the module paths of the stages
in order, which FitNet / AT hooks use.

One family a module (:mod:`.resnet`, :mod:`.wrn`, :mod:`.vgg`, :mod:`.mobilenetv2`, :mod:`.shufflenetv1`,
:mod:`.shufflenetv2`), each registering its variants from a table of sizes (:func:`.base.register_variants`);
importing this package registers them all.
"""
from raykd.models.cifar import mobilenetv2, resnet, shufflenetv1, shufflenetv2, vgg, wrn  # noqa: F401
from raykd.models.cifar import alexnet, basic_resnet  # noqa: F401

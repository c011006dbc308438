"""Model zoo. Importing this package registers every raykd model family in :data:`raykd.registry.MODELS`;
:func:`build_model` builds any of them with its weights."""
from raykd.models.registry import check_model_name, create_model
from raykd.models.build import build_model
from raykd.models import bicubic, cifar  # noqa: F401
from raykd.models import edsr, rcan, srresnet, swinir  # noqa: F401
from raykd.models import aggregator  # noqa: F401
from raykd.models import dvmsr, vim  # noqa: F401
from raykd.models import srvm  # noqa: F401

__all__ = ["create_model", "check_model_name", "build_model"]

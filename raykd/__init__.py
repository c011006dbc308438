"""raykd: knowledge distillation on Ray. ``import raykd`` loads nothing else (torch, Ray): ``raykd.load_student``
imports the models when it is first used."""
__version__ = "0.1.0"

__all__ = ["load_student"]


def __getattr__(name: str):
    if name == "load_student":
        from raykd.models.student import load_student

        return load_student
    raise AttributeError(f"module 'raykd' has no attribute {name!r}")

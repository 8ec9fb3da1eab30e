"""KD-DocRE on Ray. `from kddocre_ray import Extractor` is the Python face of a trained model
(extract.py); it is imported on first use, so that the command line and Ray's workers, which
import submodules, never pay for it."""


def __getattr__(name: str):
    if name == "Extractor":
        from .extract import Extractor

        return Extractor
    raise AttributeError(f"module 'kddocre_ray' has no attribute {name!r}")

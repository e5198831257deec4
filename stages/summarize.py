"""DVC stage summarize_<kind>: every model's results/<kind>/MODEL/metrics.json -> one table
(results/summary/<kind>/table.csv), one flat metrics file and a bar chart per set and model."""

import sys

from demystify import config
from demystify.evaluation.summary import SummaryError, summarize

KINDS = {  # kind -> (title, y label)
    "invariance": ("Invariance per evaluation set (top-{k} neurons)", "invariance score"),
    "classification": ("Classification on frozen features", "top-1 / mAP"),
    "segmentation": ("Segmentation with a frozen backbone", "mIoU / pixel accuracy"),
}
# metric keys per kind (invariance: one per K of params)
KEYS = {"classification": ["linear_top1", "knn_top1", "svm_map"], "segmentation": ["miou", "pixel_accuracy"]}


def main(argv: list[str]) -> int:
    try:
        if len(argv) != 1 or argv[0] not in KINDS:
            raise SummaryError(f"usage: python stages/summarize.py {{{','.join(KINDS)}}}")
        kind = argv[0]
        p = config.load(kind, "variants")
        title, ylabel = KINDS[kind]
        keys = [f"top{k}" for k in p["invariance"].ks] if kind == "invariance" else KEYS[kind]
        table = summarize(f"results/{kind}", list(p["variants"]), f"results/summary/{kind}", keys,
                          title.format(k=keys[0][3:]), ylabel, plot_keys=keys[:1] if kind == "invariance" else None)
    except (config.ConfigError, SummaryError) as exc:
        print(f"summarize: {exc}", file=sys.stderr)
        return 1
    print(f"summarize {kind}: {len(table)} values")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

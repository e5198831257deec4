"""DVC stage pretrain@VARIANT: train (or load) one variant of params.yaml on --data and export its
backbone into --model, its curves and summary into --results. Also runs under torchrun (DDP)."""

import argparse
import sys

from demystify.backbone import CheckpointError
from demystify.core import config, stage_process
from demystify.core.gate import GateError
from demystify.ssl.datasets import DataError
from demystify.ssl.train import PretrainError, run_stage


def main(argv: list[str] | None = None) -> int:
    stage_process.guard()  # under DVC: dies with the DVC process, refuses to race itself
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("variant", help="an entry of params.yaml variants")
    ap.add_argument(
        "--data",
        required=True,
        help="the variant's corpus: image folder, frames folder or pairs manifest",
    )
    # not "--monitor": torchrun reads an abbreviation of its own --monitor-interval anywhere in argv
    ap.add_argument("--knn-monitor", required=True, help="labelled split for the kNN monitor")
    ap.add_argument(
        "--gate",
        required=True,
        help="check_data's gate.json: no training on data that failed a check",
    )
    ap.add_argument("--model", required=True, help="folder for backbone.pt")
    ap.add_argument(
        "--results", required=True, help="folder for dvclive's metrics and plots and summary.json"
    )
    args = ap.parse_args(argv)
    try:
        p = config.load("pretrain", "variants")
        if args.variant not in p["variants"]:
            raise PretrainError(
                f"variant {args.variant!r} is not in params.yaml variants: {', '.join(p['variants'])}"
            )
        variant = p["variants"][args.variant].model_copy(update={"data": args.data})
        result = run_stage(
            name=args.variant,
            variant=variant,
            params=p["pretrain"].model_copy(update={"monitor": args.knn_monitor}),
            gate=args.gate,
            models_dir=args.model,
            results_dir=args.results,
        )
    except (config.ConfigError, GateError, PretrainError, DataError, CheckpointError) as exc:
        print(f"pretrain: {exc}", file=sys.stderr)
        return 1
    if result:
        print(f"pretrain@{args.variant}: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The per-batch cost of per-image and boundary counts against the rest of an evaluation.

One pass over a split as ``seglab eval`` makes it (same batches, same inference path), timing
in every batch, back to back: the model (``predict_logits`` + argmax), the dataset-level
confusion update of the code before per-image counts, the per-image rows
(:func:`seglab.per_image.image_rows`, summed over the batch: evaluation now takes its dataset
matrix from that sum instead of the separate update) and the boundary rows
(:func:`seglab.boundary.boundary_rows`). Timing each step inside the same batch makes the
ratios robust on a loaded machine, where whole-run times drift by tens of percent.
Prints a table and ends with one JSON line.

    python benchmarks/bench_eval_bookkeeping.py MODEL --data camvid:$SEGLAB_DATA/camvid11
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    from seglab.artifacts.loader import load_inference_model
    from seglab.boundary import boundary_rows
    from seglab.class_ids import class_ids
    from seglab.data.formats import open_source
    from seglab.engine.evaluation import _batches
    from seglab.engine.inference import predict_logits
    from seglab.metrics.confusion import SegMetric
    from seglab.per_image import image_rows

    loaded = load_inference_model(args.model, torch.device("cpu"))
    size = (loaded.recipe or {}).get("augment", {}).get("eval_resize")
    source = open_source(args.data)
    dataset = source.dataset(args.split)
    c, ignore = source.classmap.num_classes, source.classmap.ignore_index
    metric = SegMetric(c, ignore)
    spent = {"model": 0.0, "confusion": 0.0, "per_image": 0.0, "boundary": 0.0}
    images = 0
    for _, batch, masks in _batches(dataset, args.batch_size, 2):
        t0 = time.perf_counter()
        preds = class_ids(predict_logits(loaded.model, batch, mean=loaded.mean, std=loaded.std,
                                         size=size)).cpu()
        t1 = time.perf_counter()
        metric.update(preds, masks)
        t2 = time.perf_counter()
        image_rows(preds, masks, c, ignore).sum(0)  # evaluation sums them into its matrix
        t3 = time.perf_counter()
        boundary_rows(preds, masks, c, ignore)
        t4 = time.perf_counter()
        for key, dt in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            spent[key] += dt
        images += len(batch)
    today = spent["model"] + spent["confusion"]
    print(f"{images} images, batch {args.batch_size}; seconds summed over the batches")
    for key, value in spent.items():
        print(f"{key:10s} {value:8.2f} s  {100 * value / today:6.1f}% of model + confusion")
    print(json.dumps({"model": args.model, "data": args.data, "split": args.split,
                      "images": images, "seconds": spent,
                      "per_image_overhead": spent["per_image"] / today,
                      "boundary_overhead": spent["boundary"] / today}))


if __name__ == "__main__":
    main()

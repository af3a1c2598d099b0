"""The evaluator's metrics: hand-computed values on a hand-made set, and pycocotools' COCOeval on a random set."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from rgtp_vitdet.metrics import coco_ap50, vid_devkit_ap50


def _hand_set():
    # class 0: two GT boxes in two frames; three detections: TP (0.9), FP (0.8), TP (0.7).
    gts = {
        1: (np.array([[0, 0, 100, 100]], float), np.array([0])),
        2: (np.array([[50, 50, 150, 150]], float), np.array([0])),
        3: (np.zeros((0, 4)), np.zeros(0, int)),
    }
    dets = {
        1: (
            np.array([[0, 0, 100, 90], [200, 200, 250, 250]], float),
            np.array([0.9, 0.8]),
            np.array([0, 0]),
        ),
        2: (np.array([[55, 50, 150, 150]], float), np.array([0.7]), np.array([0])),
        # class 5 has no ground truth anywhere: it must not enter the mean
        3: (np.array([[0, 0, 10, 10]], float), np.array([0.99]), np.array([5])),
    }
    return gts, dets


def test_coco_ap50_hand_value():
    gts, dets = _hand_set()
    ap, per_class = coco_ap50(gts, dets, num_classes=30)
    # precision envelope: 1.0 up to recall 0.5 (51 thresholds 0.00..0.50), 2/3 above (50 thresholds)
    expected = (51 * 1.0 + 50 * (2.0 / 3.0)) / 101
    assert ap == pytest.approx(expected, abs=1e-12)
    assert per_class[0] == pytest.approx(expected, abs=1e-12)
    assert np.isnan(per_class[5]) and np.isnan(per_class[1])


def test_devkit_ap50_hand_value():
    gts, dets = _hand_set()
    ap, per_class = vid_devkit_ap50(gts, dets, num_classes=30)
    # all-point interpolation: recall 0.5 at precision 1, recall 1.0 at precision 2/3
    assert ap == pytest.approx(0.5 * 1.0 + 0.5 * (2.0 / 3.0), abs=1e-12)
    assert np.isnan(per_class[5])


def test_devkit_small_object_threshold():
    # a 10x10 GT has threshold min(0.5, 100/400) = 0.25 in the devkit: an IoU-0.3 detection is a hit there, not in COCO
    gts = {1: (np.array([[0, 0, 9, 9]], float), np.array([0]))}
    dets = {1: (np.array([[0, 0, 9, 2.5]], float), np.array([0.9]), np.array([0]))}
    assert vid_devkit_ap50(gts, dets, 1)[0] == pytest.approx(1.0)
    assert coco_ap50(gts, dets, 1)[0] == pytest.approx(0.0)


def _random_set(seed: int, n_img: int = 40, n_cls: int = 5):
    rng = np.random.default_rng(seed)
    gts, dets = {}, {}
    for i in range(n_img):
        g = rng.integers(0, 6)
        xy = rng.uniform(0, 200, size=(g, 2))
        wh = rng.uniform(5, 120, size=(g, 2))
        gb = np.concatenate([xy, xy + wh], 1)
        gl = rng.integers(0, n_cls, size=g)
        gts[i + 1] = (gb, gl)
        d = rng.integers(0, 130)  # > 100 detections on some images: exercises the per-image cap
        base = gb[rng.integers(0, max(g, 1), size=d)] if g else rng.uniform(0, 200, size=(d, 4))
        jitter = rng.normal(0, 12, size=(d, 4))
        db = base + jitter
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 1)
        dl = np.where(
            rng.random(d) < 0.7,
            gl[rng.integers(0, max(g, 1), size=d)] if g else 0,
            rng.integers(0, n_cls, d),
        )
        dets[i + 1] = (db, rng.random(d), dl)
    return gts, dets


@pytest.mark.parametrize("seed", [0, 1])
def test_coco_ap50_equals_pycocotools(seed):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    n_cls = 5
    gts, dets = _random_set(seed, n_cls=n_cls)
    images = [{"id": i, "height": 400, "width": 400} for i in gts]
    annos, results = [], []
    for i, (b, lab) in gts.items():
        for box, c in zip(b, lab):
            w, h = box[2] - box[0], box[3] - box[1]
            annos.append(
                {
                    "id": len(annos) + 1,
                    "image_id": i,
                    "category_id": int(c) + 1,
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    for i, (b, s, lab) in dets.items():
        for box, sc, c in zip(b, s, lab):
            results.append(
                {
                    "image_id": i,
                    "category_id": int(c) + 1,
                    "score": float(sc),
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {
            "images": images,
            "annotations": annos,
            "categories": [{"id": c + 1, "name": str(c)} for c in range(n_cls)],
        }
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ap, per_class = coco_ap50(gts, dets, n_cls)
    assert 0.05 < ap < 0.95  # a non-degenerate set
    assert ap == pytest.approx(ev.stats[1], abs=1e-12)
    prec = ev.eval["precision"][
        0, :, :, 0, 2
    ]  # IoU 0.5, all recall thresholds, classes, area all, 100 dets
    for c in range(n_cls):
        assert per_class[c] == pytest.approx(prec[:, c].mean(), abs=1e-12)

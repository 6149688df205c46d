"""Train the evaluation classifier shipped as weights/mnist-classifier.safetensors.

    python scripts/train_classifier.py --data ../shared/data
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere, no install needed

import ebm_play  # noqa: E402
from ebm_play.metrics import classify, train_classifier  # noqa: E402

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--data", default=None)
p.add_argument("--epochs", type=int, default=3)
p.add_argument("--out", default="weights/mnist-classifier.safetensors")
a = p.parse_args()
ebm_play.configure_threads()
train, test = ebm_play.mnist(train=True, root=a.data), ebm_play.mnist(train=False, root=a.data)
t0 = time.time()
model = train_classifier(train, epochs=a.epochs)
acc = (classify(model, test.x)[1].argmax(1) == test.y).float().mean().item()
print(f"test accuracy {acc:.4f} on {test.source}; {time.time() - t0:.0f}s")
ebm_play.save_model(model, a.out, info={"data": train.source, "epochs": a.epochs, "test_accuracy": round(acc, 4),
                                        "train_seconds": round(time.time() - t0)})

"""Attribute recognition: transfer-learned classifiers and linear probes on VAE latents.

* :func:`train_classifier` / :func:`resume_classifier` (``facevae classify train``): a torchvision
  backbone (InceptionV3 at 299×299 with its auxiliary head, ResNet-18/50) or a small CNN, multi-label
  BCE, batched augmentation, class-imbalance handling, two-stage transfer learning.
* :func:`evaluate` (``facevae classify eval``): per-attribute accuracy, balanced accuracy, F1 and
  ROC AUC with thresholds chosen on the validation split.
* :func:`probe_run` (``facevae probe``): logistic-regression probes from a VAE's posterior means to
  every attribute, optionally compared with a classifier.
"""

from facevae.recognition.backbones import BACKBONES, AttributeClassifier, WeightsError
from facevae.recognition.config import ClassifierConfig
from facevae.recognition.evaluate import evaluate
from facevae.recognition.probe import probe_run
from facevae.recognition.train import load_classifier, resume_classifier, train_classifier

__all__ = ["BACKBONES", "AttributeClassifier", "ClassifierConfig", "WeightsError", "evaluate", "load_classifier",
           "probe_run", "resume_classifier", "train_classifier"]

"""Exercise 16's model: a linear topic classifier on TF-IDF features that overfits on purpose.

``train_bow_classifier`` is a deliberately small model (a linear layer on
TF-IDF features) that trains in seconds on a CPU and overfits on purpose: it
gives ``course/16_exercise_early_stopping.ipynb`` a real validation curve to
stop on. It is exercise code, apart from the course's training loops.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from tqdm.auto import tqdm

from helpers.data.loaders import subsample, wiki_topics
from helpers.device import set_seed

__all__ = ["train_bow_classifier"]


def train_bow_classifier(
    stopper: Callable[[float], bool] | None,
    max_epochs: int = 60,
    train_size: int | None = 1500,
    lr: float = 0.2,
    seed: int = 42,
    device: str = "cpu",
) -> dict:
    """Train a linear topic classifier on TF-IDF features of Wikipedia paragraphs.

    After every epoch the validation loss is passed to ``stopper`` (an object
    called as ``stopper(val_loss) -> bool``, e.g. an ``EarlyStopping``);
    training stops when it returns True. Returns the history:
    ``train_loss``, ``val_loss``, ``val_accuracy`` per epoch and
    ``best_epoch`` (1-based epoch of the lowest validation loss).
    """
    set_seed(seed)
    splits = wiki_topics(seed=seed)
    train = subsample(splits["train"], train_size, seed=seed)
    validation = splits["validation"]
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=1)
    x_train = torch.tensor(vectorizer.fit_transform(train["text"]).toarray(), dtype=torch.float32, device=device)
    x_val = torch.tensor(vectorizer.transform(validation["text"]).toarray(), dtype=torch.float32, device=device)
    y_train = torch.tensor(train["label"], device=device)
    y_val = torch.tensor(validation["label"], device=device)
    num_classes = splits["train"].features["label"].num_classes

    model = torch.nn.Linear(x_train.shape[1], num_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)  # no weight decay: we want to see overfitting
    loss_fn = torch.nn.CrossEntropyLoss()
    history: dict = {"train_loss": [], "val_loss": [], "val_accuracy": []}
    for _ in tqdm(range(max_epochs), desc="epochs", leave=False):
        model.train()
        optimizer.zero_grad()
        loss = loss_fn(model(x_train), y_train)  # full batch: the set is small
        loss.backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
            val_loss = float(loss_fn(logits, y_val))
            accuracy = float((logits.argmax(-1) == y_val).float().mean())
        history["train_loss"].append(loss.item())
        history["val_loss"].append(val_loss)
        history["val_accuracy"].append(accuracy)
        if stopper is not None and stopper(val_loss):
            break
    history["best_epoch"] = int(np.argmin(history["val_loss"])) + 1
    return history

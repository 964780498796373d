"""How much an embedding knows about the classes, measured before any training is spent on it.

Two standard figures of self-supervised learning, computed once when an embedding is made
and stored in its manifest:

* **k-NN accuracy** (InstDisc, Wu et al. 2018; solo-learn's ``WeightedKNNClassifier``):
  every test image is classified by its k = 20 nearest training embeddings under cosine
  similarity, each neighbour voting for its label with weight ``exp(similarity / 0.07)``.
* **Linear-probe accuracy**: multinomial logistic regression on the standardised training
  embeddings (full-batch L-BFGS, a small L2 penalty), scored on the test embeddings.

Both read embeddings only, never pixels, so an imported embedding (``--encoder file``) is
measured exactly like a trained one. An embedding without test rows is measured on a
held-out fifth of the training set instead, and says so (``protocol``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

KNN_K = 20
KNN_TEMPERATURE = 0.07
SIMILARITY_BLOCK_BYTES = 256 * 2**20
"""Memory for one block of test-to-training similarities in the k-NN accuracy."""


def _tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


@torch.inference_mode()
def knn_accuracy(
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    *,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    chunk_bytes: int = SIMILARITY_BLOCK_BYTES,
) -> float:
    """Weighted k-NN accuracy of ``test`` against ``train`` (cosine similarity).

    The test rows go in chunks whose similarity block to the whole bank fits ``chunk_bytes``
    (512 rows against CIFAR-10's 50,000, as before; 67 against a million, where 512 rows make a 2 GB block).
    """
    bank = F.normalize(_tensor(train), dim=1)
    chunk = max(1, min(512, chunk_bytes // (4 * max(1, len(bank)))))
    labels = torch.as_tensor(train_labels, dtype=torch.int64)
    classes = int(max(labels.max().item(), int(np.max(test_labels))) + 1)
    k = min(k, len(bank))
    correct = 0
    for start in range(0, len(test), chunk):
        queries = F.normalize(_tensor(test[start : start + chunk]), dim=1)
        similarity, neighbours = (queries @ bank.T).topk(k, dim=1)
        votes = torch.zeros(len(queries), classes).scatter_add_(1, labels[neighbours], (similarity / temperature).exp())
        truth = torch.as_tensor(test_labels[start : start + chunk], dtype=torch.int64)
        correct += int((votes.argmax(1) == truth).sum())
    return correct / max(len(test), 1)


def linear_probe_accuracy(
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    *,
    l2: float = 1e-4,
    max_iter: int = 100,
) -> float:
    """Test accuracy of a logistic-regression probe fitted on the training embeddings.

    Deterministic on a CPU: full-batch L-BFGS from zero weights, features standardised with
    the training mean and standard deviation.
    """
    x = _tensor(train)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x = (x - mean) / std
    y = torch.as_tensor(train_labels, dtype=torch.int64)
    classes = int(max(int(y.max()), int(np.max(test_labels))) + 1)
    weight = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + l2 * (weight * weight).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        logits = ((_tensor(test) - mean) / std) @ weight + bias
        return float((logits.argmax(1).numpy() == np.asarray(test_labels)).mean())


def embedding_quality(
    vectors: np.ndarray,
    labels: np.ndarray,
    test_vectors: np.ndarray | None,
    test_labels: np.ndarray | None,
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """k-NN and linear-probe accuracy of an embedding, with the protocol used.

    With test rows: fitted on all training rows, scored on the test rows. Without: a seeded
    fifth of the training rows is held out and scored (``protocol`` says which).
    """
    if test_vectors is not None and test_labels is not None and len(test_vectors):
        fit_x, fit_y, eval_x, eval_y = vectors, labels, test_vectors, test_labels
        protocol = "train -> test"
    else:
        order = np.random.default_rng(seed).permutation(len(vectors))
        held = order[: max(1, len(order) // 5)]
        kept = order[len(held) :]
        fit_x, fit_y, eval_x, eval_y = vectors[kept], labels[kept], vectors[held], labels[held]
        protocol = "held-out fifth of train (the embedding has no test rows)"
    return {
        "knn_accuracy": knn_accuracy(fit_x, fit_y, eval_x, eval_y),
        "knn_k": KNN_K,
        "knn_temperature": KNN_TEMPERATURE,
        "linear_probe_accuracy": linear_probe_accuracy(fit_x, fit_y, eval_x, eval_y),
        "protocol": protocol,
        "fit_rows": len(fit_x),
        "eval_rows": len(eval_x),
    }

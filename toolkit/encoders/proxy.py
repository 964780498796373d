"""A proxy model: the classifier trained briefly on all the data, and what its training saw."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from toolkit.augment import center_crop, image_batches
from toolkit.data import ImageDataset
from toolkit.encoders.base import Encoder, EncoderOutput, Inference, TrainingOptions, loop_facts
from toolkit.errors import is_real, require
from toolkit.loop import run_loop
from toolkit.models import Classifier
from toolkit.runs import Run
from toolkit.train import ClassifierTask, TrainConfig, loop_settings


@dataclass
class ProxyOptions(TrainingOptions):
    """Attributes:
    epochs: passes over the training split (a proxy is trained briefly).
    lr: SGD learning rate (with momentum 0.9, so it converges in a few epochs).
    weight_decay: L2 on the hidden fully connected weights, as the classifier's.
    """

    epochs: float | None = 4
    batch: int = 128
    lr: float = 0.02
    weight_decay: float = 0.004

    def validate(self) -> None:
        super().validate()
        require(is_real(self.weight_decay) and self.weight_decay >= 0, "--weight-decay must be a number >= 0")


class ProxyTask(ClassifierTask):
    """The classifier's step, also recording each sample's training dynamics as it is seen.

    Per sample: how often it was *forgotten* (classified correctly at one presentation and
    wrongly at the next; Toneva et al. 2019) and whether it was ever learned. Kept on the
    device and in checkpoints, so a resumed proxy counts exactly what an uninterrupted one does.
    """

    def __init__(self, dataset: ImageDataset, config: TrainConfig) -> None:
        super().__init__(dataset, None, config)
        n = dataset.num_train
        self.forgotten = torch.zeros(n, dtype=torch.int32, device=self.device)
        self.last_correct = torch.zeros(n, dtype=torch.bool, device=self.device)
        self.ever_learned = torch.zeros(n, dtype=torch.bool, device=self.device)

    def train_step(self, phase: str, fraction: float) -> torch.Tensor:
        indices = self.samplers["full"].next()
        loss, logits = self.step_on(indices)
        correct = logits.argmax(1) == self.labels[indices]
        self.forgotten[indices] += (self.last_correct[indices] & ~correct).to(torch.int32)
        self.last_correct[indices] = correct
        self.ever_learned[indices] |= correct
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "forgotten": self.forgotten.clone(),
            "last_correct": self.last_correct.clone(),
            "ever_learned": self.ever_learned.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for name in ("forgotten", "last_correct", "ever_learned"):
            getattr(self, name).copy_(state[name])


#: Images per inference batch.
EMBED_BATCH = 1000


@torch.inference_mode()
def features_and_el2n(
    models: tuple[Classifier, Classifier],
    images: np.ndarray,
    labels: np.ndarray | None,
    *,
    crop: int,
    device: torch.device,
    batch: int = EMBED_BATCH,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Penultimate features of the averaged weights, and the EL2N score of the live weights (with ``labels``).

    ``models`` is the pair (averaged, live): one value, so that
    :class:`~toolkit.encoders.base.Inference` sends it to a cluster at once.
    """
    averaged, live = (model.to(device, memory_format=torch.channels_last) for model in models)
    modes = averaged.training, live.training
    averaged.eval()
    live.eval()
    features, errors = [], []
    for start, pixels in zip(range(0, len(images), batch), image_batches(images, device, batch), strict=True):
        x = center_crop(pixels, crop)
        features.append(averaged.features(x).float().cpu())
        if labels is not None:
            probabilities = F.softmax(live(x).float(), dim=1)
            target = F.one_hot(torch.as_tensor(labels[start : start + batch], device=device), probabilities.shape[1])
            errors.append(torch.linalg.vector_norm(probabilities - target, dim=1).cpu())
    averaged.train(modes[0])
    live.train(modes[1])
    vectors = torch.cat(features).numpy()
    return vectors, (torch.cat(errors).numpy() if labels is not None else None)


class ProxyEncoder(Encoder):
    """The paper's classifier trained for a few epochs on the full training set (a proxy model).

    The embedding is its penultimate layer (192 values of the averaged weights, centre
    crops): what a supervised model of this size has learned to tell apart. Its training
    also records per-sample scores, all oriented "higher = harder", for selectors (``ccs``)
    and for colouring the map:

    * ``el2n``: the L2 norm of softmax minus one-hot label at the end of training (Paul et
      al. 2021 score early in training, averaged over ten models; one brief run here);
    * ``forgetting``: forgetting events during training (Toneva et al. 2019); samples never
      classified correctly count one more than the most-forgotten learned sample, as in the
      paper, where unlearned samples rank hardest.

    Labels are used, so this embedding is supervised: fine for choosing which samples to
    train on first when all labels are known (the paper's setting), not for choosing which
    samples to label.
    """

    name = "proxy"
    Options = ProxyOptions
    trainable = True
    summary = "penultimate layer of the classifier trained briefly on all data (192-d), plus EL2N and forgetting"
    source = "Coleman et al. 2020 (selection via proxy); Paul et al. 2021 (EL2N); Toneva et al. 2019 (forgetting)"

    def train_config(self) -> TrainConfig:
        o = self.options
        return TrainConfig(
            split=0.0,
            steps=1,  # replaced by the loop settings; TrainConfig.validate needs a schedule
            batch=o.batch,
            lr=o.lr,
            momentum=0.9,
            weight_decay=o.weight_decay,
            seed=o.seed,
            evals=0,
            log_every=o.log_every,
            checkpoint_every=o.checkpoint_every,
            checkpoint_every_s=o.checkpoint_every_s,
            device=o.device,
            precision=o.precision,
        )

    def check(self, dataset: ImageDataset) -> None:
        require(dataset.num_classes >= 2, "the proxy encoder trains a classifier, which needs at least two classes")
        require(
            dataset.num_test > 0,
            f"data set {dataset.key} has no test images, which the proxy classifier is evaluated on; "
            "add images under test/<class>/, or hold some out with --test-fraction F",
        )

    def compute(
        self,
        dataset: ImageDataset,
        run: Run,
        *,
        progress: bool,
        checkpoint: dict[str, Any] | None,
        inference: Inference,
    ) -> EncoderOutput:
        config = self.train_config()
        task = ProxyTask(dataset, config)
        settings = self.loop_settings(dataset)
        assert settings is not None
        settings.warmup_steps = loop_settings(config).warmup_steps
        loop, final = run_loop(
            task, settings, run, progress=progress, checkpoint=checkpoint, nonfinite_hint="Lower --lr and rerun"
        )
        run.log({"kind": "stage", "stage": "embedding", "step": loop.state.step})
        start = time.perf_counter()
        models, where = (task.average.model, task.model), {"crop": task.crop, "device": task.device}
        vectors, el2n = inference.map(
            features_and_el2n, models, dataset.train_images, dataset.train_labels, batch=EMBED_BATCH, **where
        )
        test_vectors, _ = inference.map(
            features_and_el2n, models, dataset.test_images, None, batch=EMBED_BATCH, **where
        )
        forgotten = task.forgotten.cpu().numpy().astype(np.float32)
        never = ~task.ever_learned.cpu().numpy()
        forgotten[never] = forgotten.max(initial=0.0) + 1.0
        assert el2n is not None
        return EncoderOutput(
            vectors=vectors,
            test_vectors=test_vectors,
            sample_scores={"el2n": el2n, "forgetting": forgotten},
            state=task.average.model.state_dict(),
            facts={
                **loop_facts(loop),
                "embed_time_s": time.perf_counter() - start,
                "model": task.model.config,
                "epochs": self.options.epochs,
                "proxy_test_accuracy": final.get("test_accuracy"),
                "never_learned": int(never.sum()),
            },
        )

"""The ``samplesift`` command line: a thin layer over the toolkit's Python API.

Every command takes ``--workspace DIR`` (default ``$SAMPLESIFT_WORKSPACE``, else
``./workspace``) and ``--data SPEC`` (a folder path, an ``.npz`` path, ``list:FILE.csv``,
``hf:PATH``, ``cifar10`` or ``digits``, the default) with the options of how its files are read
(``--bad-images``, ``--max-pixels``, ``--test-fraction``, ...) and where the heavy work runs (``--executor
ray`` for a Ray cluster). Problems the user can fix print one line starting with
``samplesift: error:`` and exit with status 2; an interrupted command exits with 130.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from toolkit.artifacts import json_text
from toolkit.errors import SampleSiftError, terminate_as_interrupt

if TYPE_CHECKING:
    from toolkit.data import ImageDataset


SWEEP_DESCRIPTION = """\
Presets (options below override them):
  paper, cpu      the paper's Figs. 5 and 6 at the paper's schedule (GPU) or at 100 steps of 128.
  cpu-converged   does any embedding and selector beat random once the subset is learned? Equal steps,
                  1,500 steps of 128 per run (the 4,320 subset seen ~44 times), final evaluation only.
    --part pilot  1 seed (100), K = 1,000, 100/0: embeddings autoencoder, contrastive, pixels-pca,
                  proxy x selectors random-balanced, topk-activation, k-means, facility-location,
                  prototype-easy, typiclust, probcover, ccs (proxy only: it needs the proxy's
                  per-sample scores), moderate, all balanced; plus plain random: 31 runs.
    --part final  seeds 0,1,2 at K = 4,320 and 1,000, seeds 0-4 at K = 200; splits 0/100, 50/50,
                  100/0; random, random-balanced, full data, autoencoder:topk-activation and the
                  --pairs you pick from the pilot: 22 x (P + 2) + 5 runs for P pairs
                  (71 with topk-activation alone, 137 with three pairs added).
    Make the four embeddings first (samplesift embed --encoder NAME, one per encoder). Run time on a
    2-core CPU with --workers 2: a 1,500-step run takes 11-13 minutes (medians measured here), so the
    pilot about 3 hours and the final grid with three pairs about 13; on one H200 GPU (--device cuda
    --workers 12) the final grid took about 3 minutes (docs/results.md). Outputs: results, summary,
    paired (vs random-balanced) and gain tables, Fig. 5, the learning curve and the gain over random.
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _list_of(kind: type) -> Any:
    """An argparse type for comma-separated lists (``0,0.5,1``)."""

    def parse(text: str) -> tuple:
        try:
            return tuple(kind(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None

    return parse


def _common(parser: argparse.ArgumentParser, data: bool = True) -> None:
    parser.add_argument("--workspace", help="workspace folder (default: $SAMPLESIFT_WORKSPACE or ./workspace)")
    if data:
        parser.add_argument(
            "--data",
            default="digits",
            help="data spec: an image folder with train/ and test/, an .npz file, list:FILE.csv (image paths and "
            "labels), hf:PATH (a saved Hugging Face dataset or parquet folder), cifar10[:ROOT] or digits (default)",
        )
        parser.add_argument("--max-per-class", type=_positive_int, help="keep only the first N images of each class")
        _source_options(parser)


def _source_options(parser: argparse.ArgumentParser) -> None:
    """How a source's files are read (``toolkit.images.SourceOptions``); each flag is its option's name."""
    parser.add_argument(
        "--bad-images",
        choices=("error", "skip"),
        default="error",
        help="unreadable, missing or too large images: refuse the source (default) or skip and list them",
    )
    parser.add_argument(
        "--max-pixels",
        type=_positive_int,
        help="most pixels (width x height) an image may have, read from its header before decoding "
        "(default: Pillow's limit, 89,478,485); larger ones are refused, or skipped with --bad-images skip",
    )
    parser.add_argument(
        "--image-size",
        type=_positive_int,
        metavar="S",
        help="bring every image to S x S while decoding (shorter side to S, then the centre square); default: "
        "the native size when every image is at most 64 px, else 64",
    )
    parser.add_argument(
        "--decode-workers",
        type=_positive_int,
        metavar="N",
        help="processes that decode a new source in parallel (default: one per core, at most 8); "
        "the result is the same for any number",
    )
    parser.add_argument(
        "--executor",
        choices=("local", "ray"),
        help="where the heavy work runs: decoding a new source, an embedding's inference, a sweep's runs; local "
        "(default: this machine's processes) or ray (tasks on a Ray cluster, pip install 'samplesift[ray]'; the "
        "workspace and the images on a file system every node mounts). The results are the same",
    )
    parser.add_argument(
        "--ray-address", help="ray: the cluster to join (auto, ray://HOST:10001; default: start a local one)"
    )
    parser.add_argument(
        "--test-fraction",
        type=_number,
        help="for a source without a test split: hold out this share of each class's training images as one",
    )
    parser.add_argument("--test-seed", type=int, default=0, help="seed of the --test-fraction hold-out (default 0)")
    parser.add_argument(
        "--allow-outside-root", action="store_true", help="list: let the CSV name images outside its own folder"
    )
    parser.add_argument("--image-column", help="list:, hf: the image (path) column (default: found by name or type)")
    parser.add_argument("--label-column", help="list:, hf: the label column (default: found by name or type)")


def _source_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``load_dataset`` keywords of the flags :func:`_source_options` adds."""
    from toolkit.images import LOAD_OPTIONS

    where = ("decode_workers", "executor", "ray_address")  # where it is decoded: not recorded (the same arrays)
    given = {key: getattr(args, key) for key in (*LOAD_OPTIONS, *where) if getattr(args, key) is not None}
    return {"bad_files": args.bad_images, **given}


def _device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to train")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="autocast dtype")


#: ``samplesift embed`` flags for encoder options: (flag, type, help). A flag maps to the option of the same
#: name (dashes become underscores); an encoder that lacks the option refuses it, naming the ones it takes.
ENCODER_FLAGS: tuple[tuple[str, Any, str], ...] = (
    ("--epochs", _number, "passes over the training set (trainable encoders)"),
    ("--time-budget", _number, "training seconds instead of --epochs (warm-up excluded)"),
    ("--batch", _positive_int, "images per step"),
    ("--lr", _number, "learning rate"),
    ("--momentum", _number, "SGD momentum (autoencoder)"),
    ("--weight-decay", _number, "L2 penalty (contrastive, proxy)"),
    ("--temperature", _number, "NT-Xent temperature (contrastive)"),
    ("--view-size", _positive_int, "side of the training views (contrastive)"),
    ("--crop", _positive_int, "crop side (autoencoder; default 3/4 of the image side)"),
    ("--components", _positive_int, "principal components kept (pixels-pca)"),
    ("--whiten", bool, "scale components to unit variance (pixels-pca)"),
    ("--path", str, "the embedding file: .npy, .npz, .parquet or .csv (file)"),
    ("--match", str, "match file rows by auto, order or name (file)"),
    ("--seed", int, "seed of every random choice"),
    ("--device", str, "auto, cpu or cuda"),
    ("--precision", str, "auto, fp32 or bf16"),
    ("--log-every", _positive_int, "steps between loss records"),
    ("--checkpoint-every", _positive_int, "steps between resumable checkpoints"),
    ("--checkpoint-seconds", _number, "training seconds between checkpoints"),
)


def build_parser() -> argparse.ArgumentParser:
    from toolkit import __version__

    parser = argparse.ArgumentParser(
        prog="samplesift",
        description="Select the training samples that matter, then train faster (Gonzalez et al.).",
    )
    parser.add_argument("--version", action="version", version=f"samplesift {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    embed = commands.add_parser(
        "embed", help="make an embedding of every training (and test) image with an encoder (see `samplesift encoders`)"
    )
    _common(embed)
    embed.add_argument("--encoder", default="autoencoder", help="encoder name (default autoencoder, the paper's)")
    embed.add_argument("--name", help="embedding name (default: the encoder's name); an existing one is replaced")
    embed.add_argument("--resume", metavar="RUN", help="continue an interrupted embedding run (id or folder)")
    embed.add_argument("--quiet", action="store_true", help="no progress bar")
    options = embed.add_argument_group("encoder options (each encoder takes some; `samplesift encoders` lists them)")
    for flag, kind, text in ENCODER_FLAGS:
        if kind is bool:
            options.add_argument(flag, action="store_true", default=None, help=text)
        else:
            options.add_argument(flag, type=kind, default=None, help=text)

    commands.add_parser("encoders", help="list the encoders and their options")

    embeddings = commands.add_parser("embeddings", help="list a data set's embeddings with their quality figures")
    _common(embeddings)
    embeddings.add_argument("--format", choices=("table", "csv", "json"), default="table")

    select = commands.add_parser("select", help="select a subset of the training set and save its manifest")
    _common(select)
    select.add_argument("--method", required=True, help="selector name (see `samplesift methods`)")
    budget = select.add_mutually_exclusive_group(required=True)
    budget.add_argument("--size", type=int, help="number of samples K")
    budget.add_argument("--fraction", type=_number, help="share of the training set, in (0, 1]")
    select.add_argument("--balanced", action="store_true", help="per-class quotas proportional to class frequency")
    select.add_argument("--seed", type=int, default=0)
    select.add_argument("--name", help="manifest name (default <method>-k<K>-seed<S>)")
    select.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="selector parameter")
    select.add_argument("--embedding", help="which embedding to select on (default: the newest)")

    commands.add_parser("methods", help="list the selection methods")

    compare = commands.add_parser("compare", help="compare saved selections: coverage diagnostics and overlaps")
    _common(compare)
    compare.add_argument("selections", nargs="+", metavar="SELECTION", help="selection names or manifest paths")
    compare.add_argument("--embedding", help="embedding to measure on (default: the first selection's own)")
    compare.add_argument("--format", choices=("table", "csv", "json"), default="table")

    train = commands.add_parser("train", help="train the classifier: subset first, then the full set")
    _common(train)
    _device(train)
    train.add_argument("--selection", help="selection name or manifest path (needed when --split > 0)")
    train.add_argument("--split", type=_number, default=None, help="share of steps on the subset, in [0, 1]")
    length = train.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="total optimizer steps")
    length.add_argument("--time-budget", type=_number, help="total training seconds (warm-up and evaluation excluded)")
    train.add_argument("--batch", type=_positive_int, default=128, help="batch size (default 128; the paper: 1024)")
    train.add_argument("--lr", type=_number, default=0.1)
    train.add_argument("--momentum", type=_number, default=0.0)
    train.add_argument("--norm", choices=("batch", "lrn"), default="batch", help="batch norm (default) or LRN")
    train.add_argument("--crop", type=_positive_int)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--evals", type=int, default=5, help="evaluations during the run (plus one at the end)")
    train.add_argument("--log-every", type=_positive_int, default=10)
    train.add_argument("--checkpoint-every", type=_positive_int, help="steps between checkpoints")
    train.add_argument(
        "--checkpoint-seconds", type=_number, default=60.0, help="training seconds between checkpoints (default 60)"
    )
    train.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    train.add_argument("--name", help="label for the run")
    train.add_argument("--resume", metavar="RUN", help="continue an interrupted run (id or folder)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    runs = commands.add_parser("runs", help="list training runs")
    _common(runs, data=False)
    runs.add_argument("--data", help="only runs on this data spec")
    runs.add_argument("--max-per-class", type=_positive_int)
    _source_options(runs)
    runs.add_argument("--kind", choices=("train", "embed"), help="only classifier runs, or only embedding runs")
    runs.add_argument("--format", choices=("table", "csv", "json"), default="table")

    project = commands.add_parser("project", help="compute (and cache) a 2-d map of the embedding: UMAP or PCA")
    _common(project)
    project.add_argument("--method", choices=("umap", "pca"), default="umap", help="map method (default umap)")
    project.add_argument("--seed", type=int, default=0)
    project.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="n_neighbors or min_dist (umap)"
    )
    project.add_argument("--embedding", help="which embedding to map (default: the newest)")

    export = commands.add_parser("export", help="write a selection as CSV, a JSON manifest, an .npz or an image folder")
    _common(export)
    export.add_argument("--selection", required=True, help="selection name or manifest path")
    export.add_argument("--format", required=True, choices=("csv", "json", "npz", "folder"), help="what to write")
    export.add_argument("--out", required=True, help="file to write (csv, json, npz) or folder to create (folder)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing file or earlier export folder")
    export.add_argument("--link", action="store_true", help="folder: symbolic links to the source images, not copies")

    imported = commands.add_parser(
        "import", help="save a manifest, a CSV of indices or file names, an .npz or a folder export as a selection"
    )
    _common(imported)
    imported.add_argument("file", help="a .json manifest, a .csv, an .npz export or an export folder")
    imported.add_argument("--name", help="selection name (default: the manifest's, else imported-<file stem>)")
    imported.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="import even if the file records another data set or its classes or images disagree",
    )

    sweep = commands.add_parser(
        "sweep",
        help="run selectors x embeddings x sizes x splits x seeds (x schedules); write a results table and figures",
        description=SWEEP_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(sweep)
    _device(sweep)
    sweep.add_argument(
        "--preset",
        choices=("paper", "cpu", "cpu-converged"),
        help="a named sweep: paper, cpu (Figs. 5 and 6) or cpu-converged (does selection beat random?, see above); "
        "options below override it",
    )
    sweep.add_argument(
        "--part",
        action="append",
        metavar="GRID",
        help="only these parts of the preset (paper, cpu: fig5, fig6; cpu-converged: pilot, final)",
    )
    sweep.add_argument("--name", help="sweep name, part of every run's name (default: the preset or 'sweep')")
    sweep.add_argument("--selectors", type=_list_of(str), help="comma-separated selector names (every grid)")
    sweep.add_argument(
        "--add-selectors",
        type=_list_of(str),
        help="with --preset: selectors added to its Fig. 5 grid only (cpu-converged: to its pilot matrix)",
    )
    sweep.add_argument(
        "--embeddings",
        type=_list_of(str),
        help="comma-separated embedding names the selectors run on, each a separate run (every grid; default: "
        "--embedding); random rules use none and run once",
    )
    sweep.add_argument(
        "--pairs",
        type=_list_of(str),
        metavar="EMB:SEL,...",
        help="with --preset cpu-converged: EMBEDDING:SELECTOR pairs its final grid runs (e.g. proxy:ccs,"
        "contrastive:typiclust), besides autoencoder:topk-activation, random, random-balanced and full data",
    )
    sweep.add_argument("--sizes", type=_list_of(int), help="comma-separated subset sizes K (default 4320)")
    sweep.add_argument("--splits", type=_list_of(float), help="comma-separated shares of the run on the subset")
    sweep.add_argument("--seeds", type=_list_of(int), help="comma-separated seeds")
    sweep.add_argument("--steps", type=_list_of(int), help="equal-steps schedules: total optimizer steps")
    sweep.add_argument("--time-budgets", type=_list_of(float), help="equal-time schedules: training seconds")
    sweep.add_argument("--balanced", action="store_true", default=None, help="per-class quotas for every selector")
    sweep.add_argument("--batch", type=_positive_int, help="batch size")
    sweep.add_argument("--norm", choices=("batch", "lrn"))
    sweep.add_argument("--evals", type=int, help="evaluations during each run (plus one at the end)")
    sweep.add_argument("--workers", type=_positive_int, default=1, help="local: runs at a time (one process each)")
    sweep.add_argument("--threads", type=_positive_int, help="local: torch threads per run")
    sweep.add_argument("--cpus-per-run", type=_number, default=1.0, help="ray: CPUs per run (default 1)")
    sweep.add_argument("--gpus-per-run", type=_number, default=0.0, help="ray: GPUs per run, fractions allowed")
    sweep.add_argument(
        "--embedding", help="the embedding the selectors use where a grid names none (default: the newest)"
    )
    sweep.add_argument("--out", required=True, help="folder for results.csv/.parquet, summary and figures")
    sweep.add_argument("--no-png", action="store_true", help="write figures as HTML only")
    sweep.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    sweep.add_argument(
        "--report",
        action="store_true",
        help="run nothing: write the outputs of the runs finished so far (progress.json says what is missing)",
    )

    recon = commands.add_parser("reconstruct", help="write inputs, embeddings and reconstructions as a PNG (Fig. 4)")
    _common(recon)
    recon.add_argument("--indices", help="comma-separated sample indices (default: random)")
    recon.add_argument("--count", type=_positive_int, default=6, help="random samples when --indices is not given")
    recon.add_argument("--seed", type=int, default=0)
    recon.add_argument("--embedding", help="an autoencoder embedding (default: the newest one)")
    recon.add_argument("--out", required=True, help="PNG file to write")
    return parser


def _params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SampleSiftError(f"--param expects KEY=VALUE, got {pair!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _load(args: argparse.Namespace) -> ImageDataset:
    from toolkit.data import load_dataset

    return load_dataset(
        args.data,
        workspace=args.workspace,
        max_per_class=args.max_per_class,
        progress=sys.stderr.isatty(),
        **_source_kwargs(args),
    )


def _encoder_options(args: argparse.Namespace) -> dict[str, Any]:
    """The encoder options given on the command line (flags left out are the encoder's defaults)."""
    options = {}
    for flag, _, _ in ENCODER_FLAGS:
        key = flag.removeprefix("--").replace("-", "_")
        value = getattr(args, key)
        if value is not None:
            options["checkpoint_every_s" if key == "checkpoint_seconds" else key] = value
    if options.get("time_budget") is not None and "epochs" not in options:
        options["epochs"] = None  # a time budget replaces the default number of epochs
    return options


def cmd_embed(args: argparse.Namespace) -> int:
    from toolkit.encoders import Inference, get_encoder, resume_embedding

    inference = Inference(args.executor or "local", args.ray_address)  # checked (is Ray installed?) before any work
    if args.resume:
        embedding = resume_embedding(
            args.resume, workspace=args.workspace, progress=not args.quiet, inference=inference
        )
    else:
        encoder = get_encoder(args.encoder, **_encoder_options(args))
        dataset = _load(args)
        embedding = encoder.embed(
            dataset, workspace=args.workspace, name=args.name, progress=not args.quiet, inference=inference
        )
    m, q = embedding.manifest, embedding.quality
    trained = f", trained {m['train_time_s']:.1f} s" if m.get("train_time_s") else ""
    print(
        f"embedding {embedding.name!r} ({embedding.encoder}): {embedding.vectors.shape[0]} x {embedding.dim}{trained}; "
        f"k-NN accuracy {100 * q['knn_accuracy']:.2f}%, linear probe {100 * q['linear_probe_accuracy']:.2f}% "
        f"({q['protocol']}) -> {embedding.path}"
    )
    return 0


def cmd_encoders(args: argparse.Namespace) -> int:
    from toolkit.encoders import ENCODERS

    for name, cls in ENCODERS.items():
        options = ", ".join(f"{k}={v!r}" for k, v in cls.defaults().items())
        print(f"{name:12s} {cls.summary}\n{'':12s} options: {options}")
    return 0


def cmd_embeddings(args: argparse.Namespace) -> int:
    from toolkit.embedding import embedding_table

    dataset = _load(args)
    table = embedding_table(dataset, workspace=args.workspace)
    if args.format == "csv":
        print(table.to_csv(index=False), end="")
    elif args.format == "json":
        print(json_text(table.to_dict(orient="records")), end="")
    elif table.empty:
        print(f"data set {dataset.key} has no embedding yet; make one with `samplesift embed --encoder NAME`")
    else:
        shown = table.copy()
        for column in ("knn_accuracy", "linear_probe_accuracy"):
            shown[column] = shown[column].map(lambda v: "" if v is None or v != v else f"{100 * v:.2f}%")
        for column in ("train_time_s", "embed_time_s", "images_per_s", "load_average"):
            shown[column] = shown[column].map(lambda v: "" if v is None or v != v else f"{v:.1f}")
        print(shown.to_string(index=False))
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from toolkit.selection import make_selection

    dataset = _load(args)
    selection = make_selection(
        dataset,
        args.method,
        size=args.size,
        fraction=args.fraction,
        balanced=args.balanced,
        seed=args.seed,
        name=args.name,
        params=_params(args.param),
        workspace=args.workspace,
        embedding=args.embedding,
    )
    from toolkit.diagnostics import describe

    m = selection.manifest
    counts = ", ".join(f"{k}: {v}" for k, v in m["class_counts"].items())
    print(f"selected {m['size']} of {dataset.num_train} samples ({100 * m['fraction']:.2f}%) with {m['method']}")
    print(f"class counts: {counts}")
    diagnostics = m.get("diagnostics") or {}
    for line in describe(diagnostics):
        print(line)
    if diagnostics and "coverage_radius" not in diagnostics:
        print("coverage diagnostics need an embedding: run `samplesift embed` first")
    print(f"manifest: {selection.path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from toolkit.results import results_table, selection_gain
    from toolkit.selection import compare_selections, load_selection

    dataset = _load(args)
    comparison = compare_selections(dataset, args.selections, workspace=args.workspace, embedding=args.embedding)
    table = results_table(args.workspace, dataset=dataset.key)
    gains = {}
    for given in args.selections:
        selection = load_selection(given, dataset, workspace=args.workspace)
        gains[selection.name] = selection_gain(table, selection.name, selection.fingerprint)
    if args.format == "csv":
        print(comparison.table.to_csv(index_label="selection"), end="")
    elif args.format == "json":
        payload = {
            "embedding": comparison.embedding,
            "selections": comparison.table.to_dict(orient="index"),
            "jaccard": comparison.overlap.to_dict(orient="index"),
            "measured": {name: json.loads(gain.to_json(orient="records")) for name, gain in gains.items()},
        }
        print(json.dumps(payload, indent=2))
    else:
        print(f"diagnostics on embedding {comparison.embedding['name']!r} ({comparison.embedding['encoder']}):")
        print(comparison.table.to_string(float_format=lambda v: f"{v:.4g}"))
        print("\nJaccard overlap:")
        print(comparison.overlap.to_string(float_format=lambda v: f"{v:.3f}"))
        print(
            "\nmeasured gain (finished training runs on each selection; paired with random-balanced runs of the "
            "same K, split, schedule and seed):"
        )
        for name, gain in gains.items():
            if gain.empty:
                print(f"  {name}: no runs yet")
                continue
            for row in gain.itertuples(index=False):
                print(f"  {name}: {_gain_line(row)}")
    return 0


def _gain_line(row: Any) -> str:
    """One line of ``compare``'s measured gain: accuracy, then the paired difference to the baseline."""
    import pandas as pd

    fast = round(100 * float(row.split), 1)
    schedule = f"{int(row.steps_planned):,} steps" if pd.notna(row.steps_planned) else f"{row.time_budget:g} s"
    head = (
        f"K={int(row.size):,} split {fast:g}/{100 - fast:g}, {schedule} of {int(row.batch)}: "
        f"{100 * row.mean:.2f}% over {row.runs} run(s) (seeds {row.seeds})"
    )
    if row.n == 0:
        return f"{head}; no {row.baseline} runs of the same seeds yet"
    diff = f"{100 * row.mean_diff:+.2f} points"
    if row.n < 2:
        return f"{head}; vs {row.baseline} {diff} (1 pair: no interval)"
    verdict = "above zero" if row.ci_above_zero else "includes zero" if row.ci_high > 0 else "below zero"
    return (
        f"{head}; vs {row.baseline} {diff}, 95% interval [{100 * row.ci_low:+.2f}, {100 * row.ci_high:+.2f}] "
        f"({row.n} pairs; interval {verdict})"
    )


def cmd_methods(args: argparse.Namespace) -> int:
    from toolkit.selectors import SELECTORS

    for name, cls in SELECTORS.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name:22s} {doc}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from toolkit.train import TrainConfig, resume, train

    if args.resume:
        run = resume(args.resume, workspace=args.workspace, progress=not args.quiet)
    else:
        config = TrainConfig(
            split=0.0 if args.split is None else args.split,
            steps=args.steps,
            time_budget=args.time_budget,
            batch=args.batch,
            lr=args.lr,
            momentum=args.momentum,
            norm=args.norm,
            crop=args.crop,
            seed=args.seed,
            evals=args.evals,
            log_every=args.log_every,
            checkpoint_every=args.checkpoint_every,
            checkpoint_every_s=args.checkpoint_seconds,
            device=args.device,
            precision=args.precision,
            compile=args.compile,
        )
        config.validate()
        if args.split is None and args.selection is not None:
            raise SampleSiftError("--selection was given without --split; say how much of the run uses it")
        dataset = _load(args)
        run = train(
            dataset,
            config,
            selection=args.selection,
            workspace=args.workspace,
            name=args.name,
            progress=not args.quiet,
        )
    summary = run.summary() or {}
    print(
        f"run {run.id}: test accuracy {100 * summary['test_accuracy']:.2f}% (averaged weights) after "
        f"{summary['steps']} steps ({summary['steps_fast']} on the subset), {summary['wall_time_s']:.1f} s "
        f"training wall-clock ({summary['images_per_s']:.0f} images/s, warm-up and evaluation excluded) -> {run.path}"
    )
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from toolkit.runs import list_runs

    dataset_key = None
    if args.data:
        from toolkit.data import load_dataset

        dataset_key = load_dataset(
            args.data, workspace=args.workspace, max_per_class=args.max_per_class, **_source_kwargs(args)
        ).key
    table = list_runs(args.workspace, dataset=dataset_key, kind=args.kind)
    if args.format == "csv":
        print(table.to_csv(index=False), end="")
    elif args.format == "json":
        print(json_text(table.to_dict(orient="records")), end="")
    elif table.empty:
        print("no runs yet; start one with `samplesift train`")
    else:
        shown = table.drop(columns=["created"]).copy()
        shown["test_accuracy"] = shown["test_accuracy"].map(lambda v: "" if v != v or v is None else f"{100 * v:.2f}%")
        print(shown.to_string(index=False))
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    from toolkit.embedding import load_embedding
    from toolkit.projection import load_or_compute_projection

    dataset = _load(args)
    embedding = load_embedding(dataset, workspace=args.workspace, name=args.embedding)
    projection = load_or_compute_projection(
        embedding, args.method, seed=args.seed, params=_params(args.param), workspace=args.workspace
    )
    print(
        f"{args.method} map of {len(projection.coords)} samples of {dataset.key} "
        f"(computed in {projection.compute_time_s:.1f} s) -> {projection.path}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from toolkit.export import export_selection
    from toolkit.selection import load_selection

    dataset = _load(args)
    selection = load_selection(args.selection, dataset, workspace=args.workspace)
    path = export_selection(selection, dataset, args.out, args.format, overwrite=args.overwrite, link=args.link)
    print(
        f"exported selection {selection.name!r} ({selection.size} samples of {dataset.key}) as {args.format} -> {path}"
    )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from toolkit.export import import_selection

    dataset = _load(args)
    selection = import_selection(
        args.file, dataset, workspace=args.workspace, name=args.name, allow_mismatch=args.allow_mismatch
    )
    overridden = (selection.manifest.get("info") or {}).get("mismatch_allowed") or []
    for problem in overridden:
        print(f"samplesift: warning: imported despite: {problem}", file=sys.stderr)
    print(f"imported {selection.size} samples of {dataset.key} as selection {selection.name!r} ({selection.method})")
    print(f"manifest: {selection.path}")
    print(
        f"train on it: samplesift train {' '.join(dataset.cli_arguments())} --selection {selection.name} "
        "--split 0.5 --steps N"
    )
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from toolkit.experiments import build_sweep, plan_sweep, report_sweep, run_sweep, sweep_executor, write_outputs

    spec = build_sweep(
        preset=args.preset,
        parts=args.part,
        add_selectors=args.add_selectors,
        name=args.name,
        data=args.data,
        max_per_class=args.max_per_class,
        data_options=_source_kwargs(args),
        embedding=args.embedding,
        pairs=args.pairs,
        grid={
            "selectors": args.selectors,
            "embeddings": args.embeddings,
            "sizes": args.sizes,
            "splits": args.splits,
            "seeds": args.seeds,
            "steps": args.steps,
            "time_budgets": args.time_budgets,
            "balanced": args.balanced,
        },
        train={
            "batch": args.batch,
            "norm": args.norm,
            "evals": args.evals,
            "device": args.device,
            "precision": args.precision,
        },
    )
    if args.dry_run:
        plan = plan_sweep(spec, workspace=args.workspace)
        for entry in plan.entries:
            print(f"{entry.state:9s} {entry.run.describe()}" + (f"  [{entry.run_id}]" if entry.run_id else ""))
        for skipped in plan.skipped:
            print(f"skipped   {skipped.describe()}")
        print(plan.describe())
        print("per grid: " + ", ".join(f"{grid} {count}" for grid, count in plan.per_grid().items()))
        return 0
    if args.report:
        result = report_sweep(spec, workspace=args.workspace)
        written = write_outputs(result, args.out, png=not args.no_png)
        names = ", ".join(path.name for path in written)
        partial = ": partial, see progress.json" if len(result.table) < len(result.plan.entries) else ""
        print(
            f"{result.plan.describe()}\nwrote the {len(result.table)} finished run(s) ({names}) to {args.out}{partial}"
        )
        return 0
    executor = sweep_executor(
        args.executor or "local",
        workers=args.workers,
        threads=args.threads,
        address=args.ray_address,
        cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run,
    )
    result = run_sweep(spec, workspace=args.workspace, executor=executor, log=lambda line: print(line, flush=True))
    written = write_outputs(result, args.out, png=not args.no_png)
    names = ", ".join(path.name for path in written)
    print(f"{len(result.table)} finished runs in {result.seconds:.0f} s; wrote {names} to {args.out}")
    if result.failed:
        raise SampleSiftError(
            f"{len(result.failed)} run(s) failed, e.g. {result.failed[0].label}: {result.failed[0].error}; "
            "fix the cause and run the same sweep again to retry them"
        )
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    import numpy as np

    from toolkit.embedding import latest_of, load_embedding
    from toolkit.encoders.autoencoder import reconstruct
    from toolkit.viz.images import figure4_image, save_png

    dataset = _load(args)
    name = args.embedding or latest_of(dataset, "autoencoder", workspace=args.workspace)
    embedding = load_embedding(dataset, workspace=args.workspace, name=name)
    if args.indices:
        try:
            indices = [int(i) for i in args.indices.split(",") if i.strip()]
        except ValueError:
            raise SampleSiftError(f"--indices expects comma-separated whole numbers, got {args.indices!r}") from None
    else:
        rng = np.random.default_rng(args.seed)
        indices = rng.choice(dataset.num_train, size=min(args.count, dataset.num_train), replace=False).tolist()
    result = reconstruct(embedding, dataset, indices)
    path = save_png(figure4_image(result), args.out)
    print(f"wrote inputs / embeddings / reconstructions of samples {indices} to {path}")
    return 0


COMMANDS = {
    "embed": cmd_embed,
    "encoders": cmd_encoders,
    "embeddings": cmd_embeddings,
    "select": cmd_select,
    "methods": cmd_methods,
    "compare": cmd_compare,
    "train": cmd_train,
    "runs": cmd_runs,
    "project": cmd_project,
    "export": cmd_export,
    "import": cmd_import,
    "reconstruct": cmd_reconstruct,
    "sweep": cmd_sweep,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, terminate_as_interrupt)  # a terminated run is "interrupted", not "running"
    try:
        return COMMANDS[args.command](args)
    except SampleSiftError as exc:
        print(f"samplesift: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("samplesift: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""`write_report`: a run's page of the paper's figures, `RUN/report/index.html`, each figure a
PNG beside it. The page is plain HTML with relative links: it opens from disk, fetches nothing."""

import dataclasses
import html
import json
import os

import numpy as np
import tensorflow as tf

from alexnet_tf import run_dir
from alexnet_tf.figures.curves import read_curves
from alexnet_tf.figures.kernels import conv1_figure

REPORT_DIR = "report"
# The figures' files in REPORT_DIR.
CONV1_FILE, PREDICTIONS_FILE, NEIGHBOURS_FILE, CURVES_FILE = (
    "figure3_conv1.png", "figure4_predictions.png", "figure4_neighbours.png", "learning_curves.png")


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    model_dir: str
    data_dir: str  # shards from pipelines.convert: validation for the predictions, train for the neighbours
    checkpoint: str | None = None
    num_predictions: int = 8  # the paper's Figure 4 (left) shows eight
    num_queries: int = 5  # Figure 4 (right): five queries, six neighbours each
    num_neighbours: int = 6
    batch_size: int = 128  # for the training split's features


def _write_png(path, pixels):
    from PIL import Image

    tmp = f"{path}.tmp-{os.getpid()}.png"
    Image.fromarray(np.asarray(pixels, np.uint8)).save(tmp)
    os.replace(tmp, path)


def _save_figure(figure, path):
    tmp = f"{path}.tmp-{os.getpid()}.png"
    figure.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def _names(spec, data_dir):
    from pipelines import dataset as datasets

    names = tuple(spec.get("class_names") or ()) or datasets.load_statistics(data_dir).class_names
    return lambda label: names[label] if 0 <= label < len(names) else str(label)


def _validation_batch(spec, data_dir, count):
    from pipelines import dataset as datasets
    from pipelines import schema

    network = run_dir.network_of(spec)
    images, labels = next(iter(datasets.build_eval_dataset(
        datasets.Source(schema.split_file_pattern(data_dir, schema.VALIDATION_SPLIT)), datasets.EvalOptions(
            batch_size=count, image_size=network.image_size, statistics=run_dir.statistics_of(spec),
            preprocessing=run_dir.preprocessing_of(spec), output_dtype=tf.uint8))))
    return images.numpy(), labels.numpy()


def _predictions_figure(model, spec, images, labels, name_of, path):
    """Figure 4 (left): each image above its five most probable classes as bars, the true
    class's bar in red and its name under the image."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    mean = np.asarray(run_dir.statistics_of(spec).rgb_mean, np.float32)
    probabilities = tf.nn.softmax(model(images.astype(np.float32) - mean, training=False)).numpy()
    columns = min(4, len(images))
    rows = -(-len(images) // columns)
    figure, axes = pyplot.subplots(2 * rows, columns, figsize=(3.2 * columns, 4.6 * rows),
                                   gridspec_kw={"height_ratios": [3, 1.6] * rows}, squeeze=False)
    shown = []
    for index in range(rows * columns):
        image_axis, bars_axis = axes[2 * (index // columns), index % columns], axes[2 * (index // columns) + 1, index % columns]
        image_axis.axis("off")
        if index >= len(images):
            bars_axis.axis("off")
            continue
        truth = int(labels[index])
        image_axis.imshow(images[index])
        image_axis.set_title(name_of(truth)[:28], fontsize=9)
        top = np.argsort(-probabilities[index])[:5]
        colours = ["tab:red" if int(c) == truth else "tab:blue" for c in top]
        bars_axis.barh(range(len(top))[::-1], probabilities[index][top], color=colours)
        bars_axis.set_yticks(range(len(top))[::-1], [name_of(int(c))[:22] for c in top], fontsize=7)
        bars_axis.set_xlim(0, 1)
        bars_axis.tick_params(axis="x", labelsize=7)
        shown.append((name_of(truth), [(name_of(int(c)), float(probabilities[index][c])) for c in top]))
    figure.tight_layout()
    _save_figure(figure, path)
    pyplot.close(figure)
    return shown


def _neighbours_figure(model, spec, checkpoint, config, queries, labels, name_of, path):
    """Figure 4 (right): queries and their nearest training images by fc7 distance (the
    features cached as alexnet_tf.neighbors caches them)."""
    from alexnet_tf.serving import retrieval
    from pipelines import schema

    network, statistics = run_dir.network_of(spec), run_dir.statistics_of(spec)
    cache = os.path.join(config.model_dir, retrieval.FEATURES_DIR,
                         f"{schema.TRAIN_SPLIT}-{os.path.basename(checkpoint)}.npz")
    index = retrieval.split_features(
        model, image_size=network.image_size, statistics=statistics, checkpoint=checkpoint,
        file_pattern=schema.split_file_pattern(config.data_dir, schema.TRAIN_SPLIT), cache_path=cache,
        batch_size=config.batch_size, preprocessing=run_dir.preprocessing_of(spec))
    indices, distances = retrieval.nearest_neighbors(
        index.features, retrieval.image_features(model, queries, statistics.rgb_mean), config.num_neighbours)
    results = [(f"query {q + 1}: {name_of(int(labels[q]))}",
                [retrieval.Neighbor(int(i), float(d), int(index.labels[i]), name_of(int(index.labels[i])),
                                    str(index.filenames[i])) for i, d in zip(row, row_distances)])
               for q, (row, row_distances) in enumerate(zip(indices, distances))]
    retrieval.write_contact_sheet(path, queries, results, index, image_size=network.image_size)
    return results


def _curves_figure(curves, path):
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axis = pyplot.subplots(figsize=(8, 4.5))
    for values, label, style in ((curves.train_top1, "training top-1", "-"), (curves.train_top5, "training top-5", "--"),
                                 (curves.validation_top1, "validation top-1", "-"),
                                 (curves.validation_top5, "validation top-5", "--")):
        axis.plot(curves.epochs, values, style, marker="o", markersize=3, label=label,
                  color="tab:blue" if label.startswith("training") else "tab:orange")
    for epoch in curves.reduction_epochs:
        axis.axvline(epoch, color="grey", linestyle=":", linewidth=1)
    if curves.reduction_epochs:
        axis.plot([], [], color="grey", linestyle=":", label="learning rate divided")
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel("error")
    axis.set_ylim(0, 1)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    _save_figure(figure, path)
    pyplot.close(figure)


def _final_results(model_dir):
    for name in ("eval_crops10.json", "eval_crops1.json"):
        path = os.path.join(model_dir, name)
        if os.path.exists(path):
            with open(path) as f:
                return name, json.load(f)
    path = os.path.join(model_dir, run_dir.RESULTS_FILE)
    if os.path.exists(path):
        with open(path) as f:
            return run_dir.RESULTS_FILE, json.load(f)
    return None, None


def write_report(config):
    """Writes `model_dir/report/` (index.html and the PNGs). Returns the page's path."""
    model, spec, checkpoint = run_dir.load_model(config.model_dir, config.checkpoint)
    network = run_dir.network_of(spec)
    folder = os.path.join(config.model_dir, REPORT_DIR)
    os.makedirs(folder, exist_ok=True)
    name_of = _names(spec, config.data_dir)
    esc = html.escape
    sections = []

    figure = conv1_figure(model, network)
    _write_png(os.path.join(folder, CONV1_FILE), figure.image)
    towers = ("the first tower's kernels above, the second's below" if network.groups == 2 else
              "one tower" if network.groups == 1 else f"{network.groups} groups, one block each")
    sections.append(f"<h2>Figure 3: the {len(figure.boxes)} conv1 kernels</h2>\n"
                    f"<p>Each {model.get_layer('conv1').kernel.shape[0]}x{model.get_layer('conv1').kernel.shape[1]}x3 "
                    f"kernel contrast-stretched to its own range and scaled to {figure.tile} px; {towers}.</p>\n"
                    f'<img src="{CONV1_FILE}" alt="conv1 kernels">')

    images, labels = _validation_batch(spec, config.data_dir, max(config.num_predictions, config.num_queries))
    shown = _predictions_figure(model, spec, images[:config.num_predictions], labels[:config.num_predictions], name_of,
                                os.path.join(folder, PREDICTIONS_FILE))
    rows = "\n".join(f"<li>{esc(truth)}: " + ", ".join(f"{esc(name)} {p:.3f}" for name, p in top) + "</li>"
                     for truth, top in shown)
    sections.append("<h2>Figure 4 (left): validation images and their five most probable classes</h2>\n"
                    "<p>The true class's bar is red (when it is among the five).</p>\n"
                    f'<img src="{PREDICTIONS_FILE}" alt="predictions">\n<ul>\n{rows}\n</ul>')

    results = _neighbours_figure(model, spec, checkpoint, config, images[:config.num_queries],
                                 labels[:config.num_queries], name_of, os.path.join(folder, NEIGHBOURS_FILE))
    rows = "\n".join(f"<li>{esc(query)}: " + ", ".join(esc(n.label_name) for n in neighbours) + "</li>"
                     for query, neighbours in results)
    sections.append("<h2>Figure 4 (right): validation images and their nearest training images in fc7 space</h2>\n"
                    f'<img src="{NEIGHBOURS_FILE}" alt="nearest neighbours">\n<ul>\n{rows}\n</ul>')

    curves = read_curves(config.model_dir)
    if curves is None:
        origin = spec.get("imported_from")
        sections.append("<h2>Learning curves</h2>\n<p>None: this run "
                        + (f"holds weights imported from {esc(str(origin))}; it was not trained here."
                           if origin else "has no training records (logs/).") + "</p>")
    else:
        _curves_figure(curves, os.path.join(folder, CURVES_FILE))
        sections.append("<h2>Learning curves</h2>\n"
                        f"<p>Top-1 and top-5 error per epoch ({len(curves.epochs)} epochs; training: the mean of the "
                        "epoch's logged batches, validation: at the epoch's end). Dotted lines: the learning rate "
                        f"divided ({len(curves.reduction_epochs)} times).</p>\n"
                        f'<img src="{CURVES_FILE}" alt="learning curves">')
    source, final = _final_results(config.model_dir)
    if final:
        metrics = final.get("final_metrics", final)
        lines = [f"<p>From {esc(source)}: top-1 error {metrics.get('top1_error', float('nan')):.4f}, "
                 f"top-5 error {metrics.get('top5_error', float('nan')):.4f}.</p>"]
        worst = sorted(final.get("per_class_top1_error", {}).items(), key=lambda item: -item[1]["top1_error"])[:5]
        if worst:
            lines.append("<p>Worst classes (top-1 error):</p>\n<ul>\n" + "\n".join(
                f"<li>{r['top1_error']:.3f} {esc(c)} {esc(r['name'])}</li>" for c, r in worst) + "\n</ul>")
        sections.append("<h2>Final figures</h2>\n" + "\n".join(lines))
    page = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>AlexNet report: {esc(config.model_dir)}</title>\n"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{max-width:100%}</style>\n"
            f"</head>\n<body>\n<h1>{esc(config.model_dir)}</h1>\n<p>Checkpoint {esc(checkpoint)}.</p>\n"
            + "\n".join(sections) + "\n</body>\n</html>\n")
    path = os.path.join(folder, "index.html")
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, path)
    return path
